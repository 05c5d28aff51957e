"""The replay index: which recording answers the nth identical request, and why a request missed.

Invariants:
- One event loop, no locks. Per (scope, key) the recorded ids are loaded once, by one task that every
  concurrent request for that key awaits (shielded, so a client leaving cannot cancel it for others);
  taking the next one is synchronous (read, then bump the cursor, with no ``await`` between), so two
  concurrent identical requests can never get the same position and different keys never interfere.
- Cursors are per (scope, the requesting session, key): two test suites replaying the same recordings
  under their own session names each start at the first recording.
- The ids of a key are those recorded when the key was first asked for; recordings made later (auto
  mode) are played by the next run, so the nth request keeps meaning the nth recording.
- Keys made under other ``[replay] ignore`` rules (or none) are recomputed in ``prepare`` before the
  first request, for the sessions replayed.
- No aiohttp here; the database is reached only through ``proxy.store.recordings``.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.apis.families import family_for
from proxy.config import Exhausted, Replay
from proxy.replay.matchkey import Difference, KeyRules, canonical_body, differences, match_key, request_object
from proxy.store import recordings
from proxy.store.stored import Stored

log = logging.getLogger("proxy.replay.index")

Scope = tuple[str, ...] | None  # sessions to answer from; None = every recording
CANDIDATES = 200  # recorded requests compared when explaining a miss


class Take(msgspec.Struct):
    """The outcome of asking for the next recording of a key."""

    recording_id: str | None
    position: int  # 1-based: this is the nth request with this key
    available: int  # recordings of this key in scope


class Closest(msgspec.Struct):
    id: str
    session_id: str | None
    differences: list[Difference]
    copies: int = 0  # recordings of this same request among the candidates


def distance(diffs: list[Difference]) -> float:
    """Fewest differing fields first; among equals, the most similar differing text."""
    total = 0.0
    for d in diffs:
        if isinstance(d.request, str) and isinstance(d.recorded, str):
            a, b = d.request[:2000], d.recorded[:2000]
            total += 1 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() / 2
        else:
            total += 1
    return total


def describe_scope(scope: Scope) -> str:
    if scope is None:
        return "all recordings"
    names = ", ".join(repr(s) for s in scope)
    return f"session {names}" if len(scope) == 1 else f"sessions {names}"


class ReplayIndex:
    def __init__(self, engine: AsyncEngine, settings: Replay, rules: KeyRules) -> None:
        self.engine = engine
        self.settings = settings
        self.rules = rules
        self._ids: dict[tuple[Scope, str], asyncio.Task[list[str]]] = {}
        self._cursors: dict[tuple[Scope, str | None, str], int] = {}

    def scope_for(self, request_session: str | None) -> Scope:
        if self.settings.sessions:
            return tuple(self.settings.sessions)
        return (request_session,) if request_session is not None else None

    def key(self, method: str, path: str, body: bytes, upstream: str) -> str:
        return match_key(method, path, body, self.rules, upstream)

    async def prepare(self) -> int:
        """Re-key recordings made under other rules; returns how many were re-keyed."""
        scope = tuple(self.settings.sessions) or None
        changed, last = 0, ""
        while batch := await recordings.keys_to_check(self.engine, scope, self.rules.id, last):
            last = batch[-1].id
            keys = {
                r.id: self.key(r.method, r.path, r.request_body, r.upstream)
                for r in batch
                if not self.rules.owns(r.match_key)
            }
            await recordings.set_match_keys(self.engine, keys)
            changed += len(keys)
        if changed:
            log.info("replay: re-keyed %d recordings for the current [replay] ignore rules", changed)
        return changed

    async def take(self, scope: Scope, owner: str | None, key: str) -> Take:
        ids = await self._ids_for(scope, key)
        cursor = (scope, owner, key)
        n = self._cursors.get(cursor, 0)
        self._cursors[cursor] = n + 1
        return Take(self._pick(ids, n), n + 1, len(ids))

    def _pick(self, ids: Sequence[str], n: int) -> str | None:
        if n < len(ids):
            return ids[n]
        if not ids:
            return None
        policy = self.settings.on_exhausted
        if policy is Exhausted.REPEAT_LAST:
            return ids[-1]
        if policy is Exhausted.CYCLE:
            return ids[n % len(ids)]
        return None

    async def _ids_for(self, scope: Scope, key: str) -> list[str]:
        slot = (scope, key)
        task = self._ids.get(slot)
        if task is None:
            task = asyncio.ensure_future(
                recordings.ids_for_key(self.engine, key, scope, include_partial=self.settings.include_partial)
            )
            task.add_done_callback(lambda t: self._forget_failed(slot, t))
            self._ids[slot] = task
        return await asyncio.shield(task)

    def _forget_failed(self, slot: tuple[Scope, str], task: asyncio.Task[list[str]]) -> None:
        # A failed load (database away) is retried by the next request instead of being cached.
        if (task.cancelled() or task.exception() is not None) and self._ids.get(slot) is task:
            del self._ids[slot]

    async def recording(self, exchange_id: str) -> Stored | None:
        return await recordings.load_recording(self.engine, exchange_id)

    async def closest(
        self, scope: Scope, method: str, path: str, upstream: str, body: bytes, limit: int
    ) -> tuple[list[Closest], int]:
        """The recorded requests nearest to ``body`` (fewest differing fields), and how many were compared."""
        candidates = await recordings.recent_requests(self.engine, scope, method, path, upstream, CANDIDATES)
        ignored = family_for(method, path).ignored
        mine = request_object(body, self.rules, ignored)
        ranked: dict[bytes, Closest] = {}  # one entry per distinct recorded request: the latest
        for c in candidates:
            canonical = canonical_body(c.body, self.rules, ignored)
            ranked.setdefault(canonical, Closest(c.id, c.session_id, [])).copies += 1
        for canonical, closest in ranked.items():
            closest.differences = differences(mine, request_object(canonical, self.rules, ignored))
        best = sorted(ranked.values(), key=lambda c: distance(c.differences))  # stable: latest first among equals
        return best[:limit], len(candidates)
