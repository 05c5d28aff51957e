"""Smoke test of the kill -9 benchmark at a small load, on both databases: it runs end to end, kills the
proxy, reads what the database kept and leaves no database of its own behind. Loss figures are not
asserted: on a shared machine they are not facts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import BACKENDS, PG_URL


@pytest.mark.parametrize("backend", BACKENDS)
def test_killloss_runs_and_reports(backend: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    cmd = [sys.executable, "-m", "proxy.bench.killloss", "--clients", "4", "--seconds", "1"]
    cmd += ["--db", "postgres", "--pg-url", str(PG_URL)] if backend == "postgres" else ["--db", "sqlite"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    for line in ("responses the clients got as 200", "missing from the database after the kill", "bound:"):
        assert line in out.stdout, out.stdout
    got = int(out.stdout.split("got as 200: ")[1].split()[0])
    assert got > 0
