"""The test suite's own set-up: what it skips is said in one line at the end, with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_skipped_tests_are_counted_with_their_reason() -> None:
    env = {**os.environ, "PROXY_TEST_POSTGRES_URL": "off"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests/store/test_prune.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 1, out.stdout[-2000:]
    assert "because PostgreSQL is turned off (PROXY_TEST_POSTGRES_URL=off)" in lines[0]
