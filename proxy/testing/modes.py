"""The pytest plugin's record modes, and the proxy mode each one runs a cassette's proxy in.

Invariants:
- ``none`` is the default and runs the proxy in ``Mode.REPLAY``, which never opens an upstream connection.
- ``once`` is decided once per cassette and test run (every xdist worker agrees, see ``cassettes``):
  a cassette that existed before the run replays; one first written by this run keeps recording.
- Light on purpose: the plugin module imports this at pytest start-up, for every test run of every
  project that has the package installed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proxy.config import Mode, Timing

ANTHROPIC_UPSTREAM = "https://api.anthropic.com/v1"


class RecordMode(enum.StrEnum):
    """What ``--llm-record-mode`` does with a test's cassette."""

    NONE = "none"  # replay only; a request with no recording fails the test with the explained miss
    ONCE = "once"  # record when the cassette does not exist yet, else replay only (as `none`)
    NEW = "new"  # replay what is recorded, record what is not and append it to the cassette
    ALL = "all"  # record everything again and rewrite the cassette


def proxy_mode(mode: RecordMode, *, recording_once: bool) -> Mode:
    """The proxy mode for a cassette; ``recording_once``: in ``once`` mode, this run records it."""
    if mode is RecordMode.NEW:
        return Mode.AUTO
    if mode is RecordMode.ALL or (mode is RecordMode.ONCE and recording_once):
        return Mode.RECORD
    return Mode.REPLAY


@dataclass(frozen=True)
class Options:
    """The plugin's command-line options, as one value the runtime is built from."""

    record_mode: RecordMode = RecordMode.NONE
    upstream: str | None = None  # where recordings are made (the default `/v1` mount)
    anthropic_upstream: str = ANTHROPIC_UPSTREAM  # the `/anthropic/v1` mount that ANTHROPIC_BASE_URL points at
    timing: Timing = Timing.INSTANT
    run_id: str = ""  # one id for the whole test run, shared by every xdist worker
