"""The ``proxy`` command: builds the parser from the command modules and maps errors to exit codes.

Exit codes: 0 success; 1 a failure while working; 2 a usage or configuration error (bad flag or key, no
proxy database at the URL, an address in use: one line on stderr naming it, and for a bad flag the
command whose ``--help`` tells more); 130 interrupted (quietly).
A reader that goes away (``proxy usage | head``) ends the command quietly too.

Only the standard library is imported at module level, so a Ctrl-C while the rest loads is quiet as well.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with the proxy's usage errors: one line naming the problem and the command, exit code 2.

    Subcommand parsers are of this class too (``add_subparsers`` makes its parsers with the parent's
    class), so a bad flag is named by the innermost command that was given, not by ``proxy``.
    A group of subcommands given none says which there are, in the words of its ``metavar``
    ("proxy db: choose a subcommand: upgrade, current"): stock argparse names the group's internal dest.
    """

    _choice: Any = None  # the group of subcommands, if this parser has one

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs["required"] = False  # checked in parse_known_args, with a message that names the choices
        self._choice = super().add_subparsers(**kwargs)
        return self._choice

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        # Stock argparse leaves a subcommand's leftovers to the top-level parser, which names itself.
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        choice = self._choice
        if choice is not None and getattr(namespace, choice.dest, None) is None:
            self.error(f"choose a {choice.metavar or 'subcommand'}: {', '.join(choice.choices)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    from proxy.commands import db, logs, prune, replay, serve, sessions, show, transfer, usage

    parser = Parser(prog="proxy", description="Recording reverse proxy for OpenAI-compatible APIs")
    sub = parser.add_subparsers(dest="command", metavar="command")
    # Each module registers its own subcommands, in the order `proxy --help` lists them; add a new one here.
    for module in (serve, db, prune, transfer, replay, usage, sessions, logs, show):
        module.register(sub)
    return parser


def _stdout_gone() -> int:
    # Point stdout at /dev/null so the interpreter's last flush does not complain about the closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from proxy.commands import CommandFailed
        from proxy.config import ConfigError

        args = build_parser().parse_args(argv)
        try:
            return int(args.func(args))
        except ConfigError as exc:
            print(f"proxy {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except CommandFailed as exc:
            print(f"proxy {args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        return _stdout_gone()


def _interrupted() -> int:
    """Exit code 130 for a Ctrl-C, whatever code was running when it came.

    CPython marks the process as killed by Ctrl-C whenever a KeyboardInterrupt leaves code it ran from
    source text (``exec`` or ``eval`` of a string: dataclasses, namedtuple and SQLAlchemy do that as
    their modules load), even when the exception is caught later, as here; at exit it then kills itself
    with SIGINT's default action, and the shell sees a death by signal (-2) instead of 130. Running any
    source text to its end clears the mark.
    """
    exec("pass")
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
