"""How long the proxy's serving loop was held, measured from inside the proxy under test.

``python -m proxy.bench.loopwatch FILE serve ARGS...`` runs ``proxy serve ARGS...`` with a sampler in
its event loop: a timer every ``TICK`` seconds that notes, for each second, the longest stretch of CPU
the loop's thread spent between two ticks (``thread_time``: what a step of the proxy held the loop,
without the waits for a core that a busy machine adds) and the longest wall-clock gap between two ticks
minus the tick (what a new event waited for the loop, those waits included). One JSON line per
``PERIOD`` (a quarter second, so even a short round has one), ``[unix_time, cpu_ms, wall_ms]``, appended to
FILE; ``window`` reads the maximum over a time range.

Invariants:
- The sampler only observes: it adds ~500 timer wake-ups per second (a few microseconds each, well under
  1 % of a core) and writes one line per second.
- Only a one-worker proxy can be watched: ``--workers N`` spawns fresh interpreters, which do not carry
  the sampler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from aiohttp import web

TICK = 0.002
PERIOD = 0.25
SAMPLER = web.AppKey("loopwatch_sampler", asyncio.Task)


async def sample(path: Path, tick: float = TICK) -> None:
    """Append one ``[unix_time, cpu_ms, wall_ms]`` line per ``PERIOD`` to ``path``, until cancelled."""
    second = [time.time(), 0.0, 0.0]
    with path.open("a", buffering=1) as out:
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(tick)
            second[1] = max(second[1], (time.thread_time() - cpu) * 1000)
            second[2] = max(second[2], (time.perf_counter() - wall - tick) * 1000)
            if time.time() - second[0] >= PERIOD:
                out.write(json.dumps([round(v, 3) for v in second]) + "\n")
                second = [time.time(), 0.0, 0.0]


def window(path: Path, since: float, until: float) -> dict[str, float] | None:
    """The longest hold in the periods that overlap ``[since, until]``; None when none was sampled."""
    seconds: list[list[float]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                seconds.append(json.loads(line))
    inside = [s for s in seconds if since - PERIOD <= s[0] <= until]
    if not inside:
        return None
    return {"cpu_ms": round(max(s[1] for s in inside), 2), "wall_ms": round(max(s[2] for s in inside), 2)}


def command(path: Path) -> list[str]:
    """The start of a command line that runs ``proxy`` with the sampler writing to ``path``."""
    return [sys.executable, "-m", "proxy.bench.loopwatch", str(path)]


def main(argv: list[str]) -> int:
    from proxy import cli
    from proxy.forward import app as forward_app

    path = Path(argv[0])
    create = forward_app.create_app

    def create_app(*args: object, **kwargs: object) -> web.Application:
        app = create(*args, **kwargs)  # type: ignore[arg-type]

        async def start(app_: web.Application) -> None:
            app_[SAMPLER] = asyncio.create_task(sample(path))

        async def stop(app_: web.Application) -> None:
            app_[SAMPLER].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app_[SAMPLER]

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
        return app

    forward_app.create_app = create_app  # type: ignore[assignment]
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
