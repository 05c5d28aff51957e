"""``proxy db upgrade`` and ``proxy db current``."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.support.cli import PY, clean_env, run_cli


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    url = f"sqlite+aiosqlite:///{path}"
    missing = run_cli("db", "current", "--db", url, cwd=tmp_path)
    assert missing.returncode == 2 and "no proxy database" in missing.stderr and not path.exists()
    sqlite3.connect(path).close()  # an empty file: a database, with no schema yet
    assert "(empty)" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout
    upgraded = run_cli("db", "upgrade", "--db", url, cwd=tmp_path)
    assert upgraded.returncode == 0 and "up to date" in upgraded.stdout
    assert "up to date" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout


# ``proxy db upgrade`` whose user presses Ctrl-C as the migration starts (run as ``python -m``, as the proxy).
INTERRUPTED_UPGRADE = """
import os, signal, sys
from proxy import cli
from proxy.store import migrate

real_upgrade = migrate.upgrade


async def upgrade(engine):
    os.kill(os.getpid(), signal.SIGINT)
    await real_upgrade(engine)


migrate.upgrade = upgrade
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_during_a_migration_lets_it_finish_then_exits_quietly(tmp_path: Path) -> None:
    """Cancelled mid-call, the driver's thread reported into a closed loop (a traceback on the way out) and
    the migration stopped half-way; now it finishes, then the command ends: 130, nothing printed."""
    (tmp_path / "interrupted_upgrade.py").write_text(INTERRUPTED_UPGRADE)
    path = tmp_path / "x.db"
    out = subprocess.run(
        [PY, "-m", "interrupted_upgrade", "db", "upgrade", "--db", f"sqlite+aiosqlite:///{path}"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (out.returncode, out.stdout, out.stderr) == (130, "", "")
    assert "up to date" in run_cli("db", "current", "--db", f"sqlite+aiosqlite:///{path}", cwd=tmp_path).stdout


# The start-up's database step (``proxy serve`` runs the same), then whether Alembic was imported.
START_UP = """
import asyncio, sys
from proxy.commands.db import prepare_database
from proxy.config import load_settings

settings = load_settings(None, {"database": {"url": sys.argv[1]}})
print(asyncio.run(prepare_database(settings, upgrade=True)), "alembic" in sys.modules)
"""


def test_a_start_up_on_an_up_to_date_database_does_not_import_alembic(tmp_path: Path) -> None:
    (tmp_path / "start_up.py").write_text(START_UP)
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    def start() -> str:
        out = subprocess.run(
            [PY, "-m", "start_up", url], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert start().endswith("(up to date) True")  # a new database is migrated
    assert start().endswith("(up to date) False")  # the next start finds it at head
