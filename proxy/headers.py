"""The proxy's HTTP vocabulary: its own header names and the hop-by-hop set. A leaf: imports nothing."""

from __future__ import annotations

# Response: the id of the record of this exchange (or of the recording that answered it).
EXCHANGE_ID_HEADER = "X-Proxy-Exchange-Id"
# Response: on an error the proxy made itself (never on one the upstream sent): its `error.code`.
PROXY_ERROR_HEADER = "X-Proxy-Error"
# Response: `hit` / `miss` in replay, `recorded` for a request forwarded in auto mode.
REPLAY_HEADER = "X-Proxy-Replay"
# Response: `json-to-stream` / `stream-to-json` when a recording of the other kind answered.
CONVERTED_HEADER = "X-Proxy-Replay-Converted"
# Request: per-request replay timing (`instant`, `original`, or a speed factor).
TIMING_HEADER = "X-Proxy-Replay-Timing"
# Request: keep usage, not bodies, for this exchange.
NO_STORE_HEADER = "X-Proxy-No-Store"

# RFC 9110 7.6.1: meaningful for one connection only; never forwarded, in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
