"""Smoke test of the per-request benchmark: a round through every mode and a second checkout, every request
answered and every record written. No figure is asserted: on a shared machine they are not facts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_hotpath_runs_every_target_and_reports_each() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    tree = Path(__file__).parents[2]
    cmd = [
        sys.executable,
        "-m",
        "proxy.bench.hotpath",
        "-n",
        "20",
        "-c",
        "1,4",
        "--rounds",
        "1",
        "--tree",
        f"again={tree}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    for concurrency in ("concurrency 1 ", "concurrency 4 "):
        assert concurrency in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("  ") and "ms" not in line]
    assert sorted(r[0] for r in rows) == sorted(["again-record", "again-passthrough", "record", "passthrough"] * 2)
    assert all(float(r[-1]) > 0 for r in rows), out.stdout  # requests per second, so every round ran


def test_hotpath_streams_when_asked() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    cmd = [sys.executable, "-m", "proxy.bench.hotpath", "-n", "8", "-c", "2", "--rounds", "1"]
    cmd += ["--modes", "record", "--events", "5", "--pace-ms", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "k-instructions per 5-event stream" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("  ") and "ms" not in line]
    assert [r[0] for r in rows] == ["record"] and float(rows[0][-1]) > 0, out.stdout
