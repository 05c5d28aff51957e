"""Which API family speaks on which endpoint. The one place that maps a request line to a family.

Invariants:
- Decided from the method and the path below the mount alone (``/v1/chat/completions``), so the live
  path, the writer and replay always agree, for live requests and stored ones.
- Anything not listed is ``other``: forwarded and recorded, never refused.
"""

from __future__ import annotations

from proxy.apis.chat.family import CHAT, COMPLETIONS
from proxy.apis.family import Family
from proxy.apis.messages.family import MESSAGES
from proxy.apis.plain import EMBEDDINGS, OTHER
from proxy.apis.responses.family import RESPONSES

# (method, path below the mount) -> family; add a line for a new family.
ENDPOINTS: dict[tuple[str, str], Family] = {
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/completions"): COMPLETIONS,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("POST", "/v1/messages"): MESSAGES,
    ("POST", "/v1/responses"): RESPONSES,
}
ALL: tuple[Family, ...] = (*dict.fromkeys(ENDPOINTS.values()), OTHER)


def family_for(method: str, path: str) -> Family:
    return ENDPOINTS.get((method.upper(), path.rstrip("/")), OTHER)
