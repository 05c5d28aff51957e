"""``proxy db upgrade`` and ``proxy db current``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.cli import run_cli


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
