"""The ``proxy`` command as a subprocess: free ports, waiting for a port, running a command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


def proxy_cmd(*args: str) -> list[str]:
    return [PY, "-m", "proxy", *args]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    return subprocess.run(
        proxy_cmd(*args), cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )
