"""The ``proxy`` command: builds the parser from the command modules and maps errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or unreachable database (one line on
stderr naming the key or value).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy.commands import db, logs, prune, replay, serve, sessions, show, transfer, usage
from proxy.config import ConfigError

EXIT_CONFIG = 2
# Each module registers its own subcommands, in the order `proxy --help` lists them; add a new one here.
COMMAND_MODULES = (serve, db, prune, transfer, replay, usage, sessions, logs, show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy", description="Recording reverse proxy for OpenAI-compatible APIs")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
