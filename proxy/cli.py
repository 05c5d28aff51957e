"""The ``proxy`` command: builds the parser from ``COMMAND_MODULES`` and maps errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or unreachable database (one line on
stderr naming the key or value).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from proxy.config import ConfigError

EXIT_CONFIG = 2
# Each module registers its own subcommands; add a line here for a new one.
COMMAND_MODULES = (
    "proxy.commands.serve",
    "proxy.commands.db",
    "proxy.commands.prune",
    "proxy.commands.transfer",
    "proxy.commands.replay",
    "proxy.commands.usage",
    "proxy.commands.sessions",
    "proxy.commands.logs",
    "proxy.commands.show",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy", description="Recording reverse proxy for OpenAI-compatible APIs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
