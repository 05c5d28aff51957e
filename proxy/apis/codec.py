"""JSON codecs every API family shares: module-level msgspec encoder and decoders, and the errors they raise.

Invariants:
- Built once, here; no module builds its own generic JSON decoder.
- ``decode_json`` never raises on what a client or upstream sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

# msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a JSON string.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)

JSON_ENCODER = msgspec.json.Encoder()
ANY_DECODER = msgspec.json.Decoder()


def decode_json(body: bytes) -> Any:
    """Best-effort JSON for display and storage; None when the body is not JSON."""
    try:
        return ANY_DECODER.decode(body)
    except DECODE_ERRORS:
        return None
