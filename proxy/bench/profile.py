"""Where the proxy's time goes: py-spy attached to the proxy during an extra (unmeasured) round.

py-spy samples every thread of the process from outside (``--nonblocking``: it never pauses the
proxy) and only counts samples where a thread is running Python or native code, not waiting in the
event loop's poll, so ``samples / rate`` approximates CPU time. The summary gives, per request or
stream, the milliseconds spent in each function itself (self) and below it (inclusive).

Invariants: profiling rounds never count in the measured figures; without py-spy installed the
profile is skipped and the report says why.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 250
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
# Inclusive time is reported for these (the hot path and the recorder), when they appear.
KEY_FUNCTIONS = (
    "forward",
    "_forward",
    "_respond",
    "copy_body",
    "feed",
    "_run",
    "_write",
    "finalize",
    "insert_exchanges",
    "data_received",
    "_handle_request",
    "start",
)


def available() -> str | None:
    """py-spy on PATH, or beside this Python (an unactivated virtualenv)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


class Profiler:
    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = available()
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--subprocesses",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    short = "/".join(Path(file).parts[-2:]) if file else ""
    return f"{m.group('func')} ({short})"


def summarize(path: Path, requests: int, top: int = 25) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed stacks."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_name(f) for f in stack.split(";")]
            # The first frame is the thread ("process 123:\"python\"", "thread (0x..)"); skip those.
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += n
            self_c[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    per_req = (1000.0 / RATE / requests) if requests else 0.0

    def rows(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [
            {
                "function": f,
                "samples": c,
                "percent": round(100 * c / total, 2) if total else 0.0,
                "ms_per_request": round(c * per_req, 5),
            }
            for f, c in counter.most_common(limit)
        ]

    key = Counter({f: c for f, c in incl.items() if f.split(" (")[0] in KEY_FUNCTIONS})
    return {
        "samples": total,
        "rate_hz": RATE,
        "requests": requests,
        "ms_per_request": round(total * per_req, 4),
        "top_self": rows(self_c, top),
        "top_inclusive": rows(incl, top),
        "key_inclusive": rows(key, len(key)),
    }
