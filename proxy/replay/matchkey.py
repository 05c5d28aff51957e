"""The replay match key: which recordings can answer a request. Pure functions, no I/O, no clock.

Invariants:
- The key covers the upstream name, the method, the path below the mount (``/v1/chat/completions``,
  never the ``/s/{session}`` prefix) and the canonical body. Headers never take part (Authorization
  above all), nor does the query string (it is not recorded: it can carry keys).
- Canonical body: the JSON parsed, ignored fields removed, object keys sorted, compact, and integral
  floats written as integers (``1.0`` and ``1`` ask the same thing). A body that is not JSON is hashed
  as sent.
- Always ignored, because they do not change the answer: the request's API family names them
  (``Family.ignored``; for chat ``stream``, ``stream_options``, ``user``, ``metadata``). Configured extras
  are top-level names or JSON Pointers (RFC 6901), where a ``*`` segment matches every array index or
  object key.
- A key is 64 hex characters: the first 8 identify the rules it was made under (the configured ones and
  every family's, so keys made under other rules are recognised as stale and recomputed), the other
  56 are a SHA-256 of the canonical request.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from proxy.apis.codec import DECODE_ERRORS
from proxy.apis.families import ALL, family_for

KEY_VERSION = "mk1"
# What each family leaves out, in every rules id: changing a family's list makes old keys stale.
_FAMILY_RULES = sorted((f.name, sorted(f.ignored)) for f in ALL)
MAX_SHOWN = 80


def _number(text: str) -> float | int:
    """A JSON float as the key sees it: integral floats as integers (``1.0`` asks what ``1`` asks).

    The decoder's ``float_hook``, so the rule costs nothing for the rest of the body (no walk over every
    message in Python). A float past the double range is refused as the plain decoder refuses it.
    """
    value = float(text)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    if math.isinf(value):
        raise ValueError("Number out of range")
    return value


_DECODER = msgspec.json.Decoder(float_hook=_number)


class _Missing:
    def __repr__(self) -> str:
        return "absent"


MISSING: Any = _Missing()
NOT_JSON: Any = object()


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """``/a/b~1c/~0d`` -> ``("a", "b/c", "~d")`` (RFC 6901 escapes)."""
    if not pointer.startswith("/"):
        raise ValueError(f"not a JSON Pointer: {pointer!r}")
    return tuple(seg.replace("~1", "/").replace("~0", "~") for seg in pointer[1:].split("/"))


def format_pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class KeyRules:
    """The fields left out of a match key; ``id`` names this set of rules inside every key."""

    __slots__ = ("id", "ignore", "pointers")

    def __init__(self, ignore: Sequence[str] = ()) -> None:
        self.ignore = tuple(sorted({i for i in ignore if not i.startswith("/")}))
        self.pointers = tuple(sorted({parse_pointer(i) for i in ignore if i.startswith("/")}))
        spec = msgspec.json.encode([KEY_VERSION, _FAMILY_RULES, self.ignore, self.pointers])
        self.id = hashlib.sha256(spec).hexdigest()[:8]

    def owns(self, key: str | None) -> bool:
        """True when ``key`` was made under these rules."""
        return key is not None and key.startswith(self.id)


DEFAULT_RULES = KeyRules()


def _drop(node: Any, parts: tuple[str, ...]) -> None:
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
        for key in keys:
            if rest:
                _drop(node[key], rest)
            else:
                del node[key]
    elif isinstance(node, list):
        if head == "*":
            indexes = range(len(node))
        elif head.isdigit() and int(head) < len(node):
            indexes = range(int(head), int(head) + 1)
        else:
            return
        if rest:
            for i in indexes:
                _drop(node[i], rest)
        else:
            for i in reversed(indexes):
                del node[i]


def request_object(body: bytes, rules: KeyRules = DEFAULT_RULES, family_ignored: Sequence[str] = ()) -> Any:
    """The body as the key sees it: parsed, normalised, ignored fields removed; ``NOT_JSON`` otherwise.

    ``family_ignored``: the fields the request's API family always leaves out (``Family.ignored``).
    """
    if not body.strip():
        return None
    try:
        obj = _DECODER.decode(body)
    except DECODE_ERRORS:
        return NOT_JSON
    if isinstance(obj, dict):
        for name in (*family_ignored, *rules.ignore):
            obj.pop(name, None)
    for parts in rules.pointers:
        _drop(obj, parts)
    return obj


def canonical_body(body: bytes, rules: KeyRules = DEFAULT_RULES, family_ignored: Sequence[str] = ()) -> bytes:
    """Sorted, compact JSON of ``request_object``; the bytes as sent when the body is not JSON."""
    obj = request_object(body, rules, family_ignored)
    if obj is NOT_JSON:
        return body
    return msgspec.json.encode(obj, order="sorted")


def match_key(method: str, path: str, body: bytes, rules: KeyRules = DEFAULT_RULES, upstream: str = "default") -> str:
    """The 64-character key recordings are filed under; the same request always gets the same key."""
    digest = hashlib.sha256()
    for part in (KEY_VERSION, upstream, method.upper(), path):
        # A path may hold bytes that are not UTF-8 (aiohttp passes them as surrogates): keyed as sent.
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    digest.update(canonical_body(body, rules, family_for(method, path).ignored))
    return rules.id + digest.hexdigest()[:56]


class Difference(msgspec.Struct, frozen=True):
    """One field that differs: its JSON Pointer and both values (``MISSING`` when absent)."""

    path: str
    request: Any
    recorded: Any

    def describe(self) -> str:
        mine, theirs = show_pair(self.request, self.recorded)
        return f"{self.path or '/'}: {mine} (recorded {theirs})"


def differences(request: Any, recorded: Any, limit: int = 50) -> list[Difference]:
    """Leaf-level differences between two JSON values, in document order, at most ``limit``."""
    out: list[Difference] = []
    _diff(request, recorded, [], out, limit)
    return out


def _diff(a: Any, b: Any, path: list[str | int], out: list[Difference], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            _diff(a.get(key, MISSING), b.get(key, MISSING), [*path, key], out, limit)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            _diff(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, [*path, i], out, limit)
    elif a is NOT_JSON or b is NOT_JSON:
        if a is not b:
            out.append(Difference(format_pointer(path), "(not JSON)" if a is NOT_JSON else a, "(not JSON)"))
    elif type(a) is not type(b) or a != b:
        out.append(Difference(format_pointer(path), a, b))


def _show(value: Any, start: int = 0) -> str:
    if value is MISSING:
        return "absent"
    if isinstance(value, str):
        text = value[start : start + MAX_SHOWN]
        text = ("…" if start else "") + text + ("…" if start + MAX_SHOWN < len(value) else "")
        return msgspec.json.encode(text).decode()
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def show_pair(a: Any, b: Any) -> tuple[str, str]:
    """Both values for a message; two long strings are shown from a little before where they part."""
    if isinstance(a, str) and isinstance(b, str) and max(len(a), len(b)) > MAX_SHOWN:
        same = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            same += 1
        start = max(0, same - 20)
        return _show(a, start), _show(b, start)
    return _show(a), _show(b)
