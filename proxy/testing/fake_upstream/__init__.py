"""A small OpenAI-compatible upstream that streams like OpenAI, OpenRouter and vLLM do.

Used by the tests and the benchmark, and as the demo upstream of ``proxy serve --demo`` (``demo``); standalone:
``python -m proxy.testing.fake_upstream --port 9000``.
One module per API family (``chat`` with legacy ``/v1/completions``, ``responses``, ``embeddings``,
``other``), each with its ``ROUTES``; ``app`` puts them together; ``common`` holds what they share.
Behaviour is chosen by the request's ``model`` (so the real SDKs can drive every case); for chat:

- any other model: a reply that echoes the last user message word by word, usage from word counts.
- ``fake-tools``: a tool call whose JSON arguments arrive in pieces.
- ``fake-openrouter``: ``: OPENROUTER PROCESSING`` comments, CRLF line ends, usage (with ``cost``) on the
  last content chunk, float ``created``.
- ``fake-reasoning``: reasoning deltas and ``reasoning_tokens``/``cached_tokens`` in usage.
- ``fake-error-midstream``: a few chunks, then an OpenRouter-style ``error`` event (HTTP 200).
- ``fake-cut``: a few chunks, then the connection is dropped without the family's end marker.
- ``fake-error-401`` / ``-429`` / ``-500``: that status, an OpenAI error body, ``x-request-id`` and
  rate-limit headers.
- ``fake-no-usage``: a stream that never reports usage, even when asked.
- ``fake-litellm``: the usage a stream was asked for comes on a chunk with one empty choice (an empty
  ``delta``; for legacy completions an empty ``text``), as LiteLLM's proxy sends it, not on ``choices: []``.
- ``fake-usage-every-chunk``: every chunk carries the usage so far, asked for or not.
- ``fake-html`` (200 HTML), ``fake-text-error`` (502 text/plain), ``fake-json-for-stream`` (JSON even
  when a stream was asked for), ``fake-huge-event`` (one event of ``event_bytes``), ``fake-raw`` (sends
  the request's ``raw_sse`` string as latin-1 bytes in ``split``-sized writes).
- a body that is not JSON gets OpenAI's 400 ``invalid_request_error``.

``app[CONTROL]`` (or ``--reply-prefix``) makes a second upstream answer differently.

Request headers: ``x-fake-delay-ms`` paces chunks; ``x-fake-eof-delay-ms`` waits that long after a
stream's last event before ending its body; ``x-fake-gzip: 1`` gzips a non-streamed body;
``x-fake-events`` sets the number of content chunks. ``app[CONTROL].gate``, when set to an
``asyncio.Event``, holds every stream after its first chunk until the event is set (the tee timing test).
"""

from proxy.testing.fake_upstream.app import create_app, main
from proxy.testing.fake_upstream.common import CONTROL, REQUESTS, Control

__all__ = ["CONTROL", "REQUESTS", "Control", "create_app", "main"]
