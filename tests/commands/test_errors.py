"""What every command does when something is wrong before it starts: one line, exit 2, nothing created;
and how it ends when its reader goes away or the user presses Ctrl-C: quietly."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PG_MISSING, PG_URL, Database
from tests.support.cli import clean_env, free_port, proxy_cmd, run_cli
from tests.support.traffic import seed_aged

READ_COMMANDS = [
    ["usage"],
    ["logs"],
    ["sessions"],
    ["show", "01a20a63-bfca-7388-b325-58144aad8daa"],
    ["export", "--session", "s"],
    ["prune", "--older-than", "30d"],
    ["replay", "s", "--to", "http://127.0.0.1:9/v1"],
    ["db", "current"],
]


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: a[0] if a[0] != "db" else "db-current")
def test_read_command_in_an_empty_folder_says_there_is_no_database_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    line = _one_line(out)
    assert "no proxy database at sqlite+aiosqlite:///proxy.db (no such file)" in line
    assert list(tmp_path.iterdir()) == [], "nothing created"


@pytest.mark.parametrize("args", READ_COMMANDS[:7], ids=lambda a: a[0])
def test_read_command_on_a_database_without_the_proxy_schema(tmp_path: Path, args: list[str]) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (x TEXT)").connection.commit()
    out = run_cli(*args, "--db", f"sqlite+aiosqlite:///{other}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "(no proxy schema in it); `proxy serve` or `proxy db upgrade` makes one" in _one_line(out)
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("notes",)], "no migration ran"


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    if not PG_URL:
        pytest.skip(PG_MISSING)
    from sqlalchemy.engine import make_url

    from proxy.store import db

    name = f"empty_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        engine = db.create_engine(PG_URL, connect_timeout=30, command_timeout=120, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
        await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE "{name}"'))


@pytest.mark.parametrize("args", [["usage"], ["logs"], ["replay", "s", "--to", "http://127.0.0.1:9/v1"]])
def test_read_command_on_an_empty_postgres_database(tmp_path: Path, empty_postgres: str, args: list[str]) -> None:
    out = run_cli(*args, "--db", empty_postgres, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "no proxy database at postgresql+asyncpg://" in _one_line(out) and "no proxy schema" in out.stderr


async def test_a_reader_that_goes_away_ends_the_command_quietly(sqlite_db: Database, tmp_path: Path) -> None:
    for _ in range(30):
        await seed_aged(sqlite_db)
    proc = subprocess.Popen(
        proxy_cmd("logs", "-n", "500", "--db", sqlite_db.url),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `proxy logs | head -1`
    proc.stdout.close()
    code = await asyncio.to_thread(proc.wait, 60)
    assert proc.stderr.read() == b"" and code == 0


def _loading_the_proxy(pid: int, timeout: float = 30) -> None:
    """Wait until the interpreter is up and importing the proxy's libraries (msgspec is among the first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "msgspec" in Path(f"/proc/{pid}/maps").read_text():
            return
        time.sleep(0.01)
    raise AssertionError("the proxy never started loading")


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.8, 1.5])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_during_start_up_is_quiet(tmp_path: Path, delay: float, workers: str) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C: while loading, migrating, starting workers."""
    proc = subprocess.Popen(
        proxy_cmd("serve", "--demo", "--workers", workers, "--listen", f"127.0.0.1:{free_port()}"),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _loading_the_proxy(proc.pid)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert code in (0, 130), err
