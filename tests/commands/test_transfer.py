"""``proxy export`` / ``proxy import`` from the command line, then serving the import in replay mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from proxy.forward.app import create_app
from proxy.forward.state import STATE
from tests.support import Database, make_settings, upstream_requests
from tests.support.cli import free_port, proxy_cmd, run_cli, wait_port
from tests.support.traffic import MIXED_REQUESTS, send_all


async def test_cli_export_replay_import_then_serve_replay_with_no_upstream(
    tmp_path: Path, sqlite_db: Database, upstream: TestServer, aiohttp_server: Callable[..., Any]
) -> None:
    """As a user does it: export to a file, re-send, import into a fresh database, serve it in replay mode."""
    settings = make_settings(str(upstream.make_url("/v1")), sqlite_db, tmp_path)
    app = create_app(settings, sqlite_db.engine)
    server = await aiohttp_server(app)
    received = await send_all(str(server.make_url("/s/cli/v1")))
    await app[STATE].recorder.flush()
    src, dst = sqlite_db.url, f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}"
    target = str(upstream.make_url("/v1"))

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env)

    out = tmp_path / "cli.jsonl"
    result = await asyncio.to_thread(cli, "export", "--db", src, "--session", "cli", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"exported {len(MIXED_REQUESTS)} exchanges of session 'cli'" in result.stderr
    resent = await asyncio.to_thread(
        cli, "replay", "cli", "--to", target, "--db", src, "--api-key-env", "MY_KEY", "--report", "r.md",
        "--new-session", "again", MY_KEY="sk-from-env-0123456789",
    )  # fmt: skip
    assert resent.returncode == 0, resent.stderr
    assert resent.stdout.startswith(f"re-sent {len(MIXED_REQUESTS)} requests of session 'cli' to {target}")
    assert "as session 'again': 0 changed" in resent.stdout and "0 failed" in resent.stdout
    assert upstream_requests(upstream)[-1]["headers"]["Authorization"] == "Bearer sk-from-env-0123456789"
    assert "# Re-send of session `cli` as `again`" in (tmp_path / "r.md").read_text()
    assert "sk-from-env" not in (tmp_path / "r.md").read_text()
    result = await asyncio.to_thread(cli, "import", "--db", dst, str(out))
    assert result.returncode == 0 and f"imported {len(MIXED_REQUESTS)} exchanges" in result.stdout, result.stderr

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    proc = subprocess.Popen(
        proxy_cmd("serve", "--db", dst, "--mode", "replay", "--listen", f"127.0.0.1:{port}", "--replay-timing",
                  "instant"),
        cwd=tmp_path, env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_port, port, proc)
        assert await send_all(f"http://127.0.0.1:{port}/s/cli/v1") == received
    finally:
        proc.terminate()
        proc.wait(30)
