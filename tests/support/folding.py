"""Exchanges built by hand and decoded as the writer decodes them: for tests of what a body folds into."""

from __future__ import annotations

from proxy.record.decode import finalize
from proxy.record.exchange import Exchange

SSE = {"content-type": "text/event-stream"}


def finished_stream(path: str, body: bytes, reads: list[tuple[float, int]] | None = None) -> Exchange:
    """A stream that ended normally (in one read at 3 ms unless ``reads`` says otherwise), decoded."""
    ex = Exchange(method="POST", path=path, stream=True, response_headers=SSE, upstream_status=200)
    ex.response_body, ex.stream_chunks = body, reads if reads is not None else [(3.0, len(body))]
    ex.finish()
    return finalize(ex)


def finished_body(path: str, body: bytes, status: int = 200) -> Exchange:
    """A non-streamed JSON response, decoded."""
    ex = Exchange(method="POST", path=path, response_headers={"content-type": "application/json"})
    ex.status = ex.upstream_status = status
    ex.response_body = body
    ex.finish()
    return finalize(ex)
