"""Smoke test of the big-stream benchmark at a small size: it runs end to end and its record says what
passed. No timing or memory figure is asserted: on a shared machine they are not facts."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bigstream_runs_and_reports_the_record() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    cmd = [sys.executable, "-m", "proxy.bench.bigstream", "--mib", "2", "--event-bytes", "500"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    for line in ("high-water mark", "slowest", "loop-thread CPU", "(control)"):
        assert line in out.stdout, out.stdout
    events = out.stdout.split(" events of ")[0].rsplit(" ", 1)[1]
    record = next(line for line in out.stdout.splitlines() if line.startswith("record "))
    assert record.endswith(f", 0, {events}, 'complete')"), (record, events)  # every chunk's token, not truncated
