"""``proxy prune`` from the command line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Database
from tests.support.traffic import AGES_DAYS, seed_aged


@pytest.mark.parametrize("args", [["--older-than", "soon"], ["--older-than", "20d", "--db", "mysql://x"]])
def test_prune_cli_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "prune", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


async def test_prune_cli(sqlite_db: Database, tmp_path: Path) -> None:
    await seed_aged(sqlite_db)
    cmd = [sys.executable, "-m", "proxy", "prune", "--db", sqlite_db.url, "--older-than", "20d"]
    dry = await asyncio.to_thread(subprocess.run, [*cmd, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert f"would delete {sum(d > 20 for d in AGES_DAYS)} exchanges" in dry.stdout
    real = await asyncio.to_thread(
        subprocess.run, [*cmd, "--batch-size", "1"], capture_output=True, text=True, timeout=60
    )
    assert real.returncode == 0, real.stderr
    n = sum(d > 20 for d in AGES_DAYS)
    assert f"deleted {n} exchanges and {n} bodies" in real.stdout and f"in {n} batches" in real.stdout
    assert len(await sqlite_db.rows()) == len(AGES_DAYS) - n
