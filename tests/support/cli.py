"""The ``proxy`` command as a subprocess: free ports, waiting for a port, running a command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from proxy.bench.procs import is_writer

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


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's PROXY_ settings, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}, **(extra or {})}


def start_serve(
    *args: str, cwd: Path, port: int | None = None, wait: bool = True, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``proxy serve ARGS --listen 127.0.0.1:PORT`` in ``cwd`` (``env``: PROXY_ settings besides the
    flags), started and (by default) answering."""
    port = port or free_port()
    proc = subprocess.Popen(
        proxy_cmd("serve", "--listen", f"127.0.0.1:{port}", *args),
        cwd=cwd,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if wait:
        wait_port(port, proc)
    return proc, port


def stop_serve(proc: subprocess.Popen[bytes], sig: int = 15, timeout: float = 30) -> tuple[int, str]:
    """Send ``sig`` (default SIGTERM), wait; the exit code and everything it logged."""
    try:
        proc.send_signal(sig)
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, proc.stderr.read().decode() if proc.stderr else ""


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` but its recorder's writer process (``writer_of``)."""
    return [c for c in all_children(pid) if not is_writer(c)]


def writer_of(pid: int) -> int:
    """The writer process (``proxy.record.child``) of the proxy ``pid``."""
    (writer,) = [c for c in all_children(pid) if is_writer(c)]
    return writer


def all_children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def ends_soon(pid: int, timeout: float = 10) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False
