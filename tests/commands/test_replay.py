"""``proxy replay SESSION --to URL`` when things go wrong: a target that never answers, a report that
cannot be written, and failures counted the same way by the progress bar and the summary."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from proxy.commands.replay import Progress
from proxy.forward.app import create_app
from proxy.forward.state import STATE
from proxy.replay.resend import Sent
from tests.support import Database, make_settings, upstream_requests
from tests.support.cli import free_port, run_cli
from tests.support.traffic import MIXED_REQUESTS, send_all


async def _record(tmp_path: Path, db: Database, upstream: TestServer, aiohttp_server: Callable[..., Any]) -> None:
    app = create_app(make_settings(str(upstream.make_url("/v1")), db, tmp_path), db.engine)
    server = await aiohttp_server(app)
    await send_all(str(server.make_url("/s/rec/v1")))
    await app[STATE].recorder.flush()


async def test_unreachable_target_exits_1_with_the_first_error(
    tmp_path: Path, sqlite_db: Database, upstream: TestServer, aiohttp_server: Callable[..., Any]
) -> None:
    await _record(tmp_path, sqlite_db, upstream, aiohttp_server)
    target = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out: subprocess.CompletedProcess[str] = await asyncio.to_thread(
        run_cli, "replay", "rec", "--to", target, "--db", sqlite_db.url, cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr
    n = len(MIXED_REQUESTS)
    # A failure is not a change; the recorded 500 fails too (the target never answered it).
    assert f": 0 changed (0 content, 0 tool calls, 0 status), {n} failed" in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("first failure: request 1 (/v1/chat/completions): upstream 'default'")
    assert "unreachable: ClientConnectorError" in lines[0]
    assert lines[1] == f"proxy replay: every request failed; nothing reached {target}"


async def test_report_into_a_missing_folder_fails_before_sending(
    tmp_path: Path, sqlite_db: Database, upstream: TestServer, aiohttp_server: Callable[..., Any]
) -> None:
    await _record(tmp_path, sqlite_db, upstream, aiohttp_server)
    before = len(upstream_requests(upstream))
    out = await asyncio.to_thread(
        run_cli, "replay", "rec", "--to", str(upstream.make_url("/v1")), "--db", sqlite_db.url,
        "--report", str(tmp_path / "nope" / "r.md"), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and f"--report: folder {tmp_path / 'nope'} does not exist" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert len(upstream_requests(upstream)) == before, "nothing was sent"


def test_progress_counts_failures_as_the_summary_does() -> None:
    progress = Progress({"a": 200, "b": 500, "c": 200, "d": 200})
    progress(Sent("a", "new-a", 200))
    progress(Sent("b", "new-b", 502))  # an error replayed as an error
    progress(Sent("c", "new-c", 429))  # an error where the original succeeded
    progress(Sent("d", "new-d", 502, error="upstream 'default' unreachable"))  # the proxy said so
    assert (progress.done, progress.failed) == (4, 2)
