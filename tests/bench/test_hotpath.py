"""Smoke tests of the per-request (and per-stream) benchmark: rounds through every mode and a second checkout,
every request answered and every record written. No figure is asserted: on a shared machine they are not facts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _hotpath(*args: str) -> tuple[str, list[list[str]]]:
    """Its output, and the rows of its tables (target name first, requests per second last)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    out = subprocess.run(
        [sys.executable, "-m", "proxy.bench.hotpath", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("  ") and "ms" not in line]
    assert all(float(r[-1]) > 0 for r in rows), out.stdout  # requests per second, so every round ran
    return out.stdout, rows


def test_hotpath_runs_every_target_and_reports_each() -> None:
    tree = Path(__file__).parents[2]
    stdout, rows = _hotpath("-n", "20", "-c", "1,4", "--rounds", "1", "--tree", f"again={tree}")
    for concurrency in ("concurrency 1 ", "concurrency 4 "):
        assert concurrency in stdout
    assert sorted(r[0] for r in rows) == sorted(["again-record", "again-passthrough", "record", "passthrough"] * 2)


def test_hotpath_streams_when_asked() -> None:
    streams = ("--modes", "record", "--events", "5", "--pace-ms", "3")
    stdout, rows = _hotpath("-n", "8", "-c", "2", "--rounds", "1", *streams)
    assert "k-instructions per 5-event stream" in stdout
    assert [r[0] for r in rows] == ["record"], stdout


def test_hotpath_refuses_a_pace_without_streams() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy.bench.hotpath", "--pace-ms", "20"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "give --events N too" in out.stderr, out.stderr
