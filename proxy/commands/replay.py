"""``proxy replay SESSION --to URL``: re-send a recorded session to another upstream and report what changed.

The requests go through an in-process proxy in record mode (the same forwarding, usage injection and
recording as ``proxy serve``) on a loopback port, under a new session linked to the original.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from proxy.admin.views import encode
from proxy.commands import CommandFailed, Subparsers, add_common, open_engine, run, settings_from
from proxy.commands.db import prepare_database
from proxy.config import ConfigError, Mode, Settings, secret_from_env
from proxy.replay import report as reports
from proxy.store import recordings

if TYPE_CHECKING:
    from proxy.replay.resend import Sent

SESSION_MAX = 128


class Progress:
    """A one-line bar on a terminal; silent otherwise (CI logs get the summary only). It counts failures
    as the summary does (``report.failed``), from the recorded status of each request."""

    def __init__(self, originals: dict[str, int | None], out: TextIO = sys.stderr) -> None:
        self.originals = originals
        self.total, self.done, self.failed, self.out = len(originals), 0, 0, out
        self.live = out.isatty()

    def __call__(self, sent: Sent) -> None:
        self.done += 1
        self.failed += reports.failed(self.originals.get(sent.source_id), sent.status, sent.error is None)
        if self.live:
            filled = int(30 * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (30 - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} sent, {self.failed} failed")
            if self.done == self.total:
                self.out.write("\n")
            self.out.flush()


@dataclass
class ResendOptions:
    session: str
    new_session: str | None = None
    model: str | None = None
    concurrency: int = 1
    api_key: str | None = None


async def resend_session(settings: Settings, engine: AsyncEngine, args: ResendOptions) -> dict[str, Any]:
    """Re-send ``args.session`` through an in-process proxy recording to ``settings.upstream`` (the target)."""
    from aiohttp import web

    from proxy.forward.app import create_app
    from proxy.replay.resend import resend

    new_session = args.new_session or f"{args.session}-resend-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if len(new_session) > SESSION_MAX:
        raise ConfigError(f"--new-session: longer than {SESSION_MAX} characters")
    rows = [r for r in await recordings.session_exchanges(engine, args.session) if r.body and r.body.request_body]
    if not rows:
        raise ConfigError(f"SESSION: no exchanges with stored requests in session {args.session!r}")
    if await recordings.session_exists(engine, new_session):
        raise ConfigError(f"--new-session: session {new_session!r} already has exchanges")
    app = create_app(settings, engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        sent = await resend(
            rows,
            f"http://127.0.0.1:{port}",
            session=new_session,
            session_header=settings.session_header,
            api_key=args.api_key,
            model=args.model,
            concurrency=args.concurrency,
            progress=Progress({r.id: r.status for r in rows}),
        )
    finally:
        await runner.cleanup()  # drains the recorder: every new exchange is written
    new_rows = await recordings.exchanges_by_id(engine, [s.new_id for s in sent if s.new_id])
    entries = [
        reports.compare(i, row, new_rows.get(s.new_id or ""), s.error)
        for i, (row, s) in enumerate(zip(rows, sent, strict=True), 1)
    ]
    target = str(URL(settings.upstream.url).with_user(None).with_password(None))
    report = {
        "source_session": args.session,
        "session": new_session,
        "target": target,
        "model": args.model,
        "totals": reports.totals(entries),
        "requests": entries,
    }
    await recordings.save_links(
        engine,
        session_id=new_session,
        source_session_id=args.session,
        created_at=datetime.now(UTC),
        target=target,
        model=args.model,
        summary=report["totals"],
        pairs=[(s.new_id, s.source_id) for s in sent if s.new_id and s.new_id in new_rows],
    )
    return report


def _check_report_path(report: str | None) -> None:
    """Before anything is sent: a report that cannot be written would waste the whole re-send."""
    if report is None:
        return
    folder = Path(report).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"--report: folder {folder} does not exist")
    if Path(report).is_dir():
        raise ConfigError(f"--report: {report} is a folder; name a file (.json or .md)")


def cmd_replay(args: argparse.Namespace) -> int:
    args.upstream, args.mode = args.to, Mode.RECORD.value
    settings = settings_from(args, require_upstream=True)
    if args.concurrency < 1:
        raise ConfigError("--concurrency: must be >= 1")
    _check_report_path(args.report)
    options = ResendOptions(
        session=args.session,
        new_session=args.new_session,
        model=args.model,
        concurrency=args.concurrency,
        api_key=secret_from_env(args.api_key_env) if args.api_key_env else None,
    )

    async def main() -> dict[str, Any]:
        async with open_engine(settings):  # the recorded session must exist: nothing is created otherwise
            pass
        await prepare_database(settings, upgrade=settings.database.auto_migrate)
        async with open_engine(settings) as engine:
            return await resend_session(settings, engine, options)

    report = run(main)
    if args.report:
        path = Path(args.report)
        if path.suffix.lower() in (".md", ".markdown"):
            path.write_text(reports.markdown(report), encoding="utf-8")
        else:
            path.write_bytes(msgspec.json.format(encode(report), indent=2) + b"\n")
    t = report["totals"]
    print(
        f"re-sent {t['requests']} requests of session {report['source_session']!r} to {report['target']} "
        f"as session {report['session']!r}: {t['changed']} changed ({t['content_changed']} content, "
        f"{t['tool_calls_changed']} tool calls, {t['status_changed']} status), {t['failed']} failed"
        + (f"; report: {args.report}" if args.report else "")
    )
    first = next((e for e in report["requests"] if e["failed"]), None)
    if first is not None:
        print(f"first failure: request {first['index']} ({first['path']}): {first.get('error')}", file=sys.stderr)
    if t["requests"] and t["failed"] == t["requests"]:
        raise CommandFailed(f"every request failed; nothing reached {report['target']}")
    return 0


def register(sub: Subparsers) -> None:
    rep = sub.add_parser("replay", help="re-send a recorded session to another upstream and compare")
    add_common(rep)
    rep.add_argument("session", metavar="SESSION", help="the recorded session to re-send")
    rep.add_argument("--to", required=True, metavar="URL", help="upstream base URL, e.g. https://openrouter.ai/api/v1")
    rep.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the upstream API key")
    rep.add_argument("--model", metavar="NAME", help="send every request with this model instead")
    rep.add_argument("--concurrency", type=int, default=1, metavar="N", help="requests in flight (default 1)")
    rep.add_argument("--report", metavar="FILE", help="write the comparison (.json, or .md for Markdown)")
    rep.add_argument("--new-session", metavar="ID", help="name of the new session (default SESSION-resend-TIME)")
    rep.set_defaults(func=cmd_replay)
