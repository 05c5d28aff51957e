"""The ``--workers`` supervisor: a Ctrl-C while it starts its workers stops them all, never lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.cli import PY, clean_env

# Run as ``python -m`` from its folder, so the spawned workers can import ``serve`` from it.
SUPERVISED = """
import os, signal, sys, time
from multiprocessing.context import SpawnProcess

from proxy.commands import workers
from proxy.config import load_settings


def serve(settings):
    # A worker of ``proxy serve``: it runs until the supervisor's SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(120)
    sys.exit(3)


real_start = SpawnProcess.start


def start_with_ctrl_c(self):
    os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, while a worker starts
    real_start(self)


if __name__ == "__main__":
    SpawnProcess.start = start_with_ctrl_c
    sys.exit(workers.supervise(load_settings(None, {"workers": 2}), serve))
"""


def test_a_ctrl_c_while_a_worker_starts_stops_the_supervisor_and_its_workers(tmp_path: Path) -> None:
    (tmp_path / "supervised.py").write_text(SUPERVISED)
    proc = subprocess.Popen(
        [PY, "-m", "supervised"], cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        code = proc.wait(60)  # a Ctrl-C that was lost would leave it serving
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0 and "Traceback" not in err, err
