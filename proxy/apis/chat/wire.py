"""Wire schemas: the parts of OpenAI-compatible bodies the proxy reads, as msgspec Structs.

Invariants:
- These are *views*. Unknown fields are skipped (msgspec's default), never rejected, and a decoded
  Struct is never re-encoded onto the wire or into storage: the raw bytes are what we forward and keep.
- Every field a provider may omit or send as null is ``T | None = None``. OpenRouter's TypeScript SDK types
  ``created`` and ``index`` as plain numbers, so they accept floats too.
- Decoders are module constants, built once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.record.exchange import Usage

Number = int | float


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class ChatUsage(msgspec.Struct, omit_defaults=True):
    """``usage`` as chat and completions responses carry it (OpenAI's shape, OpenRouter's ``cost`` beside)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    # OpenRouter reports the charged amount itself (credits == USD).
    cost: float | None = None

    @property
    def cached_tokens(self) -> int | None:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else None

    @property
    def reasoning_tokens(self) -> int | None:
        details = self.completion_tokens_details
        return details.reasoning_tokens if details else None


class FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    index: Number | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    # Reasoning text as OpenRouter (`reasoning`) and DeepSeek/vLLM (`reasoning_content`) stream it.
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: Number = 0
    delta: Delta | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    # Legacy /v1/completions streams carry `text` instead of a delta.
    text: str | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str | None = None
    object: str | None = None
    created: Number | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    provider: str | None = None
    choices: list[ChunkChoice] | None = None
    usage: ChatUsage | None = None
    # OpenRouter reports a failure after HTTP 200 as an event carrying `error`.
    error: Any = None


class ResponseChoiceView(msgspec.Struct):
    finish_reason: str | None = None


class ResponseView(msgspec.Struct):
    """A non-streamed response body (chat, completions, embeddings, ...): only what the record needs."""

    id: str | None = None
    model: str | None = None
    choices: list[ResponseChoiceView] | None = None
    usage: ChatUsage | None = None
    error: Any = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class RequestView(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None


class ProbeChoice(msgspec.Struct):
    delta: dict[str, Any] | None = None
    text: Any = None
    finish_reason: Any = None
    logprobs: Any = None

    @property
    def empty(self) -> bool:
        """Nothing for a client: no delta value, no text, no finish reason, no logprobs."""
        if self.text or self.finish_reason is not None or self.logprobs:
            return False
        return not self.delta or all(v is None or v == "" or v == [] or v == {} for v in self.delta.values())


class UsageProbe(msgspec.Struct):
    """Just enough of a chunk to tell a usage-only chunk from the rest: usage, and no choice with anything
    in it (``choices: []`` as OpenAI sends it, or choices with empty deltas as LiteLLM's proxy does)."""

    choices: list[ProbeChoice] | None = None
    # Raw cannot sit in a union with None; an absent field and an explicit null both read as b"null".
    usage: msgspec.Raw = msgspec.Raw(b"null")

    @property
    def usage_only(self) -> bool:
        return bytes(self.usage) != b"null" and all(c.empty for c in self.choices or ())


CHUNK_DECODER = msgspec.json.Decoder(ChatCompletionChunk)
RESPONSE_DECODER = msgspec.json.Decoder(ResponseView)
REQUEST_DECODER = msgspec.json.Decoder(RequestView)
USAGE_PROBE_DECODER = msgspec.json.Decoder(UsageProbe)


def record_usage(usage: ChatUsage | None) -> Usage:
    """The record's token counts from a chat ``usage`` object (prompt counts include cached tokens)."""
    if usage is None:
        return Usage()
    return Usage.from_provider(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
