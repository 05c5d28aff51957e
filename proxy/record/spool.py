"""The spool: records waiting on local disk for the database, and the quarantine beside it.

Invariants:
- A spool file holds one batch (msgpack ``list[Exchange]``), is named in time order
  (``spool-<ns>-<pid>-<seq>.msgpack``) and is complete or absent: it is written under a ``.tmp`` name,
  then renamed; a write that fails (ENOSPC, EIO, ...) removes its ``.tmp`` before raising.
- The spool never holds more than ``max_bytes``; ``write`` raises ``SpoolFull`` instead.
- A quarantine file (``quarantine-*.jsonl``) holds records that no database would take: one JSON object
  per line, ``{"error": ..., "exchange": {...}}`` (bodies base64, as msgspec writes bytes), never read
  back by the proxy. Moving its records back is an operator's decision.
- Blocking file I/O: called from the writer's thread and the spooler's (``record.overflow``), never from
  the serving loop; writes are serialised by a lock, so the size limit holds with both writing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from proxy.record.exchange import Exchange

# Anything that is not data (a live ``body_tap`` left by a failed step) is written as nil.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=lambda _obj: None)
_DECODER = msgspec.msgpack.Decoder(list[Exchange])
_JSON = msgspec.json.Encoder(enc_hook=lambda _obj: None)


class SpoolFull(Exception):
    """The batch would take the spool past its size limit."""


class Quarantined(msgspec.Struct):
    error: str
    exchange: Exchange


class Spool:
    def __init__(self, folder: str | os.PathLike[str], max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._seq = 0
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("spool-*.msgpack"))

    def quarantine_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("quarantine-*.jsonl"))

    def size(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):  # written back meanwhile
                total += path.stat().st_size
        return total

    def encode(self, batch: list[Exchange]) -> bytes:
        return _ENCODER.encode(batch)

    def write(self, data: bytes) -> Path:
        """Add an encoded batch; raises ``SpoolFull`` or ``OSError`` (then nothing is left on disk)."""
        with self._lock:
            if self.size() + len(data) > self.max_bytes:
                raise SpoolFull(f"spool full ({self.max_bytes} bytes)")
            return self._put("spool", ".msgpack", data)

    def read(self, path: Path) -> list[Exchange]:
        return _DECODER.decode(path.read_bytes())

    def set_aside(self, path: Path) -> None:
        """A spool file that cannot be read is kept, under a name the proxy no longer reads."""
        path.rename(path.with_suffix(".bad"))

    def quarantine(self, records: Iterable[tuple[Exchange, str]]) -> Path:
        lines = []
        for ex, error in records:
            try:
                lines.append(_JSON.encode(Quarantined(error, ex)))
            except Exception as exc:  # noqa: BLE001 - the last resort keeps at least what repr shows
                text = f"{error}; not JSON-encodable ({type(exc).__name__}): {ex!r}"
                lines.append(_JSON.encode({"error": text.encode("utf-8", "backslashreplace").decode()}))
        with self._lock:
            return self._put("quarantine", ".jsonl", b"\n".join(lines) + b"\n")

    def _put(self, kind: str, suffix: str, data: bytes) -> Path:
        self._seq += 1
        name = f"{kind}-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{suffix}"
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        tmp = self.folder / (name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            tmp.rename(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final
