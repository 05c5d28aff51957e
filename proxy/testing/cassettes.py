"""Cassettes: where a test's recordings live as files, and how they are read and written safely.

Invariants:
- A cassette is a file in the proxy's versioned export format, read and written only through
  ``proxy.replay.export`` (``read_records``, ``jsonl``): reviewable in a diff, importable with
  ``proxy import``, and free of credentials (the export never writes them).
- Every write is read-merge-write under an exclusive lock, then a temporary file in the cassette's own
  directory and ``os.replace``: a reader sees the old file or the new one, never a mix, and two xdist
  workers writing one shared cassette each merge into what the other wrote, so no recording is lost.
  The lock (not a per-test file) is what makes a shared cassette one file that every worker adds to.
- Lock and run-stamp files live in the temp directory (one per cassette path and user), never beside
  the cassettes, so nothing but cassettes appears in the repository.
- Records are identified by exchange id, and each test records under its own session id, so merging is
  exact: ``APPEND`` adds unknown ids, ``REPLACE_TEST`` first drops the test's older records,
  ``REWRITE`` keeps only the given records.
- ``once`` is decided under the same lock: a cassette that existed before this test run replays; one
  this run first wrote (stamped with the run's id, which every xdist worker shares) keeps recording.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.replay.export import ExportError, Record, jsonl, read_records

_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+@\[\]-]")
_SESSION_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]")
_MAX_NAME = 100
LOCK_TIMEOUT = 60.0


class CassetteError(Exception):
    """A cassette that cannot be used, in one line naming the file."""


class Merge(enum.Enum):
    """How a test's recordings go into its cassette."""

    APPEND = "append"  # add the recordings the cassette does not have yet (record mode `new`)
    REPLACE_TEST = "replace-test"  # drop this test's older recordings first (recording a shared cassette)
    REWRITE = "rewrite"  # the cassette becomes exactly these recordings (recording a test's own cassette)


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _bounded(clean: str, raw: str) -> str:
    """``clean`` as is when nothing was lost making it, else cut short and made unique by a hash."""
    if clean == raw and len(clean) <= _MAX_NAME:
        return clean
    return f"{clean[:_MAX_NAME]}@{_digest(raw)}"


def session_name(module: str, qualname: str) -> str:
    """The session a test records under: ``test_mod::TestClass::test_name``, valid as a proxy session id."""
    raw = f"{module}::{qualname}"
    clean = _SESSION_UNSAFE.sub("-", raw)
    if not clean[0].isalnum():
        clean = "t" + clean
    return _bounded(clean, raw)


def file_stem(qualname: str) -> str:
    """A test's own cassette name: ``TestClass.test_name[param]``, safe on every file system."""
    raw = qualname.replace("::", ".")
    return _bounded(_FILE_UNSAFE.sub("_", raw), raw)


@dataclass(frozen=True)
class Cassette:
    path: Path
    name: str  # as shown to people and written in the file's header: ``test_mod/test_name``
    shared: bool  # named by the marker, so several tests may use it

    @classmethod
    def locate(cls, test_file: Path, qualname: str, marker_name: str | None) -> Cassette:
        """``cassettes/<module>/<test>.jsonl`` beside the test file; a marker's ``name`` replaces ``<test>``,
        and a name with a ``/`` is relative to ``cassettes/`` (shared between modules)."""
        module = test_file.stem
        if marker_name is None:
            name = f"{module}/{file_stem(qualname)}"
        else:
            parts = marker_name.removesuffix(".jsonl").split("/")
            if any(not p or p in (".", "..") or _FILE_UNSAFE.search(p) for p in parts):
                raise CassetteError(
                    f"llm_cassette: {marker_name!r} is not a cassette name (letters, digits, _.,=+@[]- and '/')"
                )
            name = "/".join(parts) if len(parts) > 1 else f"{module}/{parts[0]}"
        return cls(test_file.parent / "cassettes" / f"{name}.jsonl", name, marker_name is not None)

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[Record]:
        """The recordings in the cassette; none when it does not exist."""
        try:
            with self.path.open("rb") as fh:
                return list(read_records(fh))
        except FileNotFoundError:
            return []
        except ExportError as exc:
            raise CassetteError(f"cassette {self.path}: {exc}") from None
        except OSError as exc:
            raise CassetteError(f"cassette {self.path}: {exc.strerror or exc}") from None

    def decide_once(self, run_id: str) -> bool:
        """True when this run records the cassette in ``once`` mode: it did not exist, or this run made it."""
        with self._locked() as base:
            stamp = base.with_suffix(".run")
            if self.exists() and _read_text(stamp) != run_id:
                return False
            stamp.write_text(run_id)
            return True

    def write(self, recorded: Sequence[Record], merge: Merge, session: str) -> int:
        """Merge a test's recordings into the file; returns how many records it holds now."""
        with self._locked():
            if merge is Merge.REWRITE:
                kept: list[Record] = []
            else:
                kept = self.records()
                if merge is Merge.REPLACE_TEST:
                    kept = [r for r in kept if r.session_id != session]
            known = {r.id for r in kept}
            fresh = [r for r in recorded if r.id not in known]
            if merge is Merge.APPEND and not fresh:
                return len(kept)
            merged = sorted([*kept, *fresh], key=lambda r: (r.started_at, r.id))
            try:
                self._replace(jsonl(self.name, merged))
            except OSError as exc:
                raise CassetteError(f"cassette {self.path}: cannot write it: {exc.strerror or exc}") from None
            return len(merged)

    def _replace(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Path]:
        base = scratch_dir() / _digest(str(self.path.resolve()), 32)
        with exclusive(base):
            yield base


@contextlib.contextmanager
def exclusive(base: Path) -> Iterator[None]:
    """Hold ``base``.lock against every other process (xdist workers, other runs) of this user."""
    try:
        from filelock import FileLock
    except ImportError:
        raise CassetteError(
            "llm_proxy needs the 'filelock' package: pip install 'llm-recording-proxy[pytest]'"
        ) from None
    with FileLock(str(base.with_suffix(".lock")), timeout=LOCK_TIMEOUT):
        yield


def scratch_dir() -> Path:
    """The plugin's own folder in the temp directory, one per user: locks, run stamps, the template database."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name (some containers): fall back to the uid
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    path = Path(tempfile.gettempdir()) / f"llm-proxy-cassettes-{_FILE_UNSAFE.sub('_', user)}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
