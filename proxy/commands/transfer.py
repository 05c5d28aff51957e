"""``proxy export`` and ``proxy import``: a recorded session as a file to commit next to a test suite."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from proxy.apis.codec import JSON_ENCODER
from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.commands.db import prepare_database
from proxy.config import ConfigError, Settings
from proxy.replay.matchkey import KeyRules

# proxy.replay.export and proxy.replay.har are imported inside the commands: they pull in aiohttp, and every other
# `proxy` command would pay for that at start-up.


def _version() -> str:
    try:
        return version("llm-recording-proxy")
    except PackageNotFoundError:
        return "0"


async def export_session(settings: Settings, session: str, fmt: str) -> tuple[bytes, int]:
    from proxy.replay.export import jsonl, session_records
    from proxy.replay.har import to_har

    async with open_engine(settings) as engine:
        records = await session_records(engine, session)
    if not records:
        raise ConfigError(f"--session: no exchanges recorded in session {session!r}")
    if fmt == "har":
        bases = {name: up.url for name, up in settings.all_upstreams().items()}
        return JSON_ENCODER.encode(to_har(records, bases, _version())) + b"\n", len(records)
    return jsonl(session, records), len(records)


def cmd_export(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    data, count = run(lambda: export_session(settings, args.session, args.format))
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).write_bytes(data)
        print(f"exported {count} exchanges of session {args.session!r} to {args.output}", file=sys.stderr)
    return 0


async def import_file(settings: Settings, path: Path, session: str | None) -> tuple[int, int]:
    from proxy.replay.export import import_records, read_records

    await prepare_database(settings, upgrade=settings.database.auto_migrate)
    with path.open("rb") as fh:
        records = list(read_records(fh))
    async with open_engine(settings) as engine:
        return await import_records(engine, records, KeyRules(settings.replay.ignore), session)


def cmd_import(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"import: file not found: {path}")
    from proxy.replay.export import ExportError

    try:
        new, skipped = run(lambda: import_file(settings, path, args.session))
    except ExportError as exc:
        print(f"proxy: error: {path}: {exc}", file=sys.stderr)
        return 1
    note = f", {skipped} already present" if skipped else ""
    print(f"imported {new} exchanges from {path}{note}")
    return 0


def register(sub: Subparsers) -> None:
    exp = sub.add_parser("export", help="write a recorded session to a file (JSONL, or HAR 1.2)")
    add_common(exp)
    exp.add_argument("--session", required=True, metavar="ID", help="the session to export")
    exp.add_argument("-o", "--output", metavar="FILE", help="output file (default: standard output)")
    exp.add_argument("--format", choices=("jsonl", "har"), default="jsonl")
    exp.set_defaults(func=cmd_export)
    imp = sub.add_parser("import", help="load an exported JSONL file into the database")
    add_common(imp)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--session", metavar="ID", help="import into this session, under new exchange ids")
    imp.set_defaults(func=cmd_import)
