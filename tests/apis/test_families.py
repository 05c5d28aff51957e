"""Which family speaks on which endpoint, and what every family promises (no I/O, nothing raised)."""

from __future__ import annotations

import json

import pytest

from proxy.apis.families import ALL, family_for
from proxy.apis.family import Event, fold_stream
from proxy.record.exchange import Outcome
from tests.support.folding import finished_stream


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/chat/completions", "chat"),
        ("post", "/v1/chat/completions/", "chat"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/messages", "messages"),
        ("POST", "/v1/messages/count_tokens", "other"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/responses/resp_123", "other"),
        ("GET", "/v1/chat/completions", "other"),
        ("GET", "/v1/models", "other"),
        ("POST", "/v1/audio/speech", "other"),
    ],
)
def test_endpoints(method: str, path: str, name: str) -> None:
    assert family_for(method, path).name == name


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "body", [b"", b"\xff\xfe not utf-8", b"[1, 2]", b'{"model": 3, "stream": "yes"}', b"{" * 1000, b"null"]
)
def test_every_family_takes_any_bytes(family: object, body: bytes) -> None:
    family.read_request(body)  # type: ignore[attr-defined]
    folded = family.fold_body(body)  # type: ignore[attr-defined]
    assert folded.complete_at == len(body) or folded.complete_at is None
    events = [Event(1.0, len(body), "", body), Event(2.0, len(body), "x", body.decode("latin-1"))]
    fold_stream(family, events)  # type: ignore[arg-type]
    family.body_to_stream(body, False)  # type: ignore[attr-defined]


def test_a_stream_of_an_unknown_family_is_complete_when_its_body_ends() -> None:
    ex = finished_stream("/v1/audio/speech", b'event: progress\ndata: {"a": 1}\n\ndata: {"b": 2}\n\n')
    assert ex.outcome is Outcome.COMPLETE and ex.event_count == 2 and ex.error is None


def test_a_chat_stream_without_its_end_marker_says_which_marker() -> None:
    ex = finished_stream("/v1/chat/completions", b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
    assert ex.outcome is Outcome.UPSTREAM_CUT and ex.error == "stream ended without [DONE] or a finish_reason"


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_every_family_makes_errors_its_clients_read(family: object) -> None:
    body = json.loads(family.error_body(502, "upstream 'x' unreachable", "proxy_error", "upstream_unreachable", a=1))  # type: ignore[attr-defined]
    assert body["error"]["message"] == "upstream 'x' unreachable" and body["error"]["code"] == "upstream_unreachable"
    assert body["error"]["a"] == 1 and isinstance(body["error"]["type"], str)
