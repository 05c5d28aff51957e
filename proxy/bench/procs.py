"""Processes under test and what /proc says about them.

Invariants:
- CPU is ``utime + stime`` of a process and all its live descendants (proxy workers, nginx workers),
  read from ``/proc/<pid>/stat``; a target's CPU for a round is the difference of two readings.
- Peak memory is ``VmHWM`` summed over the process tree. Before each round the peak is reset by writing
  ``5`` to ``/proc/<pid>/clear_refs`` so it is that round's peak; when the kernel refuses, the figure
  is the peak since start and ``peak_reset`` says so.
- Every process started here is stopped here (terminate, then kill after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    out = [pid]
    i = 0
    while i < len(out):
        for task in Path(f"/proc/{out[i]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in task.read_text().split())
        i += 1
    return out


def _stat_ticks(stat: Path) -> int:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def cpu_seconds(pid: int) -> float:
    return sum(_stat_ticks(Path(f"/proc/{p}/stat")) for p in descendants(pid)) / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU of the process tree split into its serving processes' main threads and everything else.

    In the proxy the main thread runs the serving event loop; the rest is recording (the writer process,
    ``proxy.record.child``, or the writer and spool threads) and idle helpers such as a worker's
    supervisor watch.
    """
    main = total = 0
    for p in descendants(pid):
        # The process's own counters include threads that already ended; its main thread's are its task's.
        total += _stat_ticks(Path(f"/proc/{p}/stat"))
        if not is_writer(p):
            main += _stat_ticks(Path(f"/proc/{p}/task/{p}/stat"))
    other = total - main
    return main / CLK_TCK, other / CLK_TCK


def is_writer(pid: int) -> bool:
    """Whether ``pid`` is a recorder's writer process (``python -m proxy.record.child``)."""
    try:
        return b"proxy.record.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb(pid: int) -> float:
    return sum(_status_kb(p, "VmHWM") for p in descendants(pid)) / 1024


def rss_mb(pid: int) -> float:
    return sum(_status_kb(p, "VmRSS") for p in descendants(pid)) / 1024


def reset_peak(pid: int) -> bool:
    ok = True
    for p in descendants(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def clean_environ() -> dict[str, str]:
    """The environment without PROXY_* variables, so a user's settings never leak into a measurement."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Service:
    """A server process listening on ``port``."""

    name: str
    cmd: list[str]
    port: int
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # Where the first request goes: "/v1/chat/completions" below this base.
    base_path: str = "/v1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        self.log_path = self.cwd / f"{self.name}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env={**clean_environ(), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} never opened port {self.port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(5)


async def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll an async predicate until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
