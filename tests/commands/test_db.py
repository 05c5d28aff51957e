"""``proxy db upgrade`` and ``proxy db current``."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_cli


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert "(empty)" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout
    upgraded = run_cli("db", "upgrade", "--db", url, cwd=tmp_path)
    assert upgraded.returncode == 0 and "up to date" in upgraded.stdout
    assert "up to date" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout
