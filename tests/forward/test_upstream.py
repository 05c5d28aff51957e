"""Header filtering both ways: hop-by-hop and Connection-named headers dropped, the rest kept in order."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.forward.upstream import forward_request_headers, forward_response_headers, request_drop


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_headers_lose_hop_by_hop_host_length_and_connection_tokens() -> None:
    sent = _headers(
        ("Host", "proxy"),
        ("Accept", "a"),
        ("Connection", "keep-alive, X-Hop"),
        ("x-hop", "1"),
        ("Content-Length", "3"),
        ("X-Proxy-Session", "s"),
        ("accept", "b"),
        ("TE", "trailers"),
        ("User-Agent", "ua"),
    )
    out = forward_request_headers(sent, request_drop(["x-proxy-session"]))
    assert list(out.items()) == [("Accept", "a"), ("accept", "b"), ("User-Agent", "ua")]


def test_response_headers_keep_content_length_unless_reframed() -> None:
    got = _headers(("Content-Type", "t"), ("Transfer-Encoding", "c"), ("Content-Length", "5"), ("Keep-Alive", "k"))
    kept = [("Content-Type", "t"), ("Content-Length", "5")]
    assert list(forward_response_headers(got, reframed=False).items()) == kept
    assert list(forward_response_headers(got, reframed=True).items()) == [("Content-Type", "t")]
