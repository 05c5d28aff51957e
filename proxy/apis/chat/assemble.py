"""Fold decoded stream chunks into the response a non-streamed call would have returned.

Invariants:
- Pure: no I/O, no clock. Feeding the same chunks gives the same result.
- Text (content, refusal, reasoning, legacy ``text``) and tool-call arguments are joined per choice in
  arrival order; tool calls are keyed by their ``index`` (falling back to arrival order when a backend
  omits it); the last non-null ``finish_reason`` wins.
- Usage is taken from whichever chunk carries it (OpenAI sends it in a final ``choices: []`` chunk,
  OpenRouter and vLLM may attach it to the last content chunk); the last one seen wins.
- Memory is bounded by ``text_limit``: past that many characters of text (all choices and tool-call
  arguments together) further pieces are dropped and ``truncated`` is set; everything else (usage,
  finish reasons, tool-call ids and names) is still taken from every chunk. Pieces are joined in groups
  as they come, so a stream of millions of tiny deltas does not keep millions of string objects.
"""

from __future__ import annotations

from typing import Any

from proxy.apis.chat.wire import ChatCompletionChunk, ChatUsage, ChunkChoice


class _Text:
    """Text pieces in arrival order, joined in groups of ``GROUP`` so each costs little more than its characters."""

    __slots__ = ("groups", "pieces")
    GROUP = 512

    def __init__(self) -> None:
        self.groups: list[str] = []
        self.pieces: list[str] = []

    def add(self, piece: str) -> None:
        pieces = self.pieces
        pieces.append(piece)
        if len(pieces) >= self.GROUP:
            self.groups.append("".join(pieces))
            pieces.clear()

    def join(self) -> str:
        return "".join(self.groups) + "".join(self.pieces)


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments = _Text()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type or "function",
            "function": {"name": self.name, "arguments": self.arguments.join()},
        }


class _Choice:
    __slots__ = ("content", "finish_reason", "logprobs", "reasoning", "refusal", "role", "text", "tools")

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: _Text | None = None
        self.refusal: _Text | None = None
        self.reasoning: _Text | None = None
        self.text: _Text | None = None
        self.tools: dict[int, _ToolCall] = {}
        self.logprobs: dict[str, list[Any]] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: ChunkChoice, room: bool) -> int:
        """Fold one choice delta; text is kept only while there is ``room``. Returns the characters kept."""
        kept = 0
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        if choice.text is not None:
            self.text = _append(self.text, choice.text, room)
            kept += len(choice.text)
        if choice.logprobs and room:
            self._add_logprobs(choice.logprobs)
        delta = choice.delta
        if delta is None:
            return kept
        if delta.role is not None:
            self.role = delta.role
        if delta.content is not None:
            self.content = _append(self.content, delta.content, room)
            kept += len(delta.content)
        if delta.refusal is not None:
            self.refusal = _append(self.refusal, delta.refusal, room)
            kept += len(delta.refusal)
        reasoning = delta.reasoning if delta.reasoning is not None else delta.reasoning_content
        if reasoning is not None:
            self.reasoning = _append(self.reasoning, reasoning, room)
            kept += len(reasoning)
        for tc in delta.tool_calls or ():
            key = int(tc.index) if tc.index is not None else len(self.tools)
            call = self.tools.get(key)
            if call is None:
                call = self.tools[key] = _ToolCall()
            if tc.id:
                call.id = tc.id
            if tc.type:
                call.type = tc.type
            if tc.function is not None:
                if tc.function.name:
                    call.name = (call.name or "") + tc.function.name
                if tc.function.arguments and room:
                    call.arguments.add(tc.function.arguments)
                    kept += len(tc.function.arguments)
        return kept if room else 0

    def _add_logprobs(self, logprobs: Any) -> None:
        if not isinstance(logprobs, dict):
            return
        merged = self.logprobs if self.logprobs is not None else {}
        for key in ("content", "refusal"):
            items = logprobs.get(key)
            if isinstance(items, list):
                merged.setdefault(key, []).extend(items)
        self.logprobs = merged

    def to_dict(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index}
        if self.text is not None and self.content is None and self.role is None:
            out["text"] = self.text.join()
        else:
            message: dict[str, Any] = {
                "role": self.role or "assistant",
                "content": self.content.join() if self.content is not None else None,
                "refusal": self.refusal.join() if self.refusal is not None else None,
            }
            if self.reasoning is not None:
                message["reasoning"] = self.reasoning.join()
            if self.tools:
                message["tool_calls"] = [self.tools[k].to_dict() for k in sorted(self.tools)]
            out["message"] = message
        out["logprobs"] = self.logprobs
        out["finish_reason"] = self.finish_reason
        return out


def _produces_output(choice: ChunkChoice) -> bool:
    # The role-only first chunk carries `content: ""`: not a token yet.
    if choice.text:
        return True
    delta = choice.delta
    return delta is not None and bool(
        delta.content or delta.tool_calls or delta.refusal or delta.reasoning or delta.reasoning_content
    )


def _append(text: _Text | None, piece: str, room: bool) -> _Text:
    # A field seen past the limit still shows up (empty), so the assembled shape matches the stream's.
    if text is None:
        text = _Text()
    if room:
        text.add(piece)
    return text


class Assembler:
    """Accumulates chunks; ``result()`` returns the equivalent ``chat.completion`` object."""

    def __init__(self, text_limit: int = 1 << 62) -> None:
        self.room = text_limit
        self.truncated = False  # text past ``text_limit`` was dropped
        self.id: str | None = None
        self.created: int | float | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.provider: str | None = None
        self.usage: ChatUsage | None = None
        self.error: Any = None
        self.legacy_text = False
        self.chunks = 0
        self._choices: dict[int, _Choice] = {}
        self._finished = 0  # choices with a finish reason: all_finished is asked after every chunk
        self._has_output = False

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.chunks += 1
        self.id = self.id or chunk.id
        if self.created is None:
            self.created = chunk.created
        self.model = chunk.model or self.model
        self.system_fingerprint = chunk.system_fingerprint or self.system_fingerprint
        self.service_tier = chunk.service_tier or self.service_tier
        self.provider = chunk.provider or self.provider
        if chunk.object == "text_completion":
            self.legacy_text = True
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.error is not None:
            self.error = chunk.error
        for choice in chunk.choices or ():
            key = int(choice.index)
            state = self._choices.get(key)
            if state is None:
                state = self._choices[key] = _Choice()
            was_open = state.finish_reason is None
            room = self.room > 0
            self.room -= state.add(choice, room)
            self.truncated = self.truncated or not room
            if was_open and state.finish_reason is not None:
                self._finished += 1
            if not self._has_output:
                self._has_output = _produces_output(choice)

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason: the one a dashboard shows for the exchange."""
        if not self._choices:
            return None
        return self._choices[min(self._choices)].finish_reason

    @property
    def all_finished(self) -> bool:
        """True once every choice seen has its finish reason: the answer is whole (chat's end marker)."""
        return bool(self._choices) and self._finished == len(self._choices)

    @property
    def has_output(self) -> bool:
        """True once any choice produced a non-empty piece of output (the time-to-first-token moment)."""
        return self._has_output

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.legacy_text else "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [self._choices[k].to_dict(k) for k in sorted(self._choices)],
            "usage": self.usage,
        }
        if self.system_fingerprint is not None:
            out["system_fingerprint"] = self.system_fingerprint
        if self.service_tier is not None:
            out["service_tier"] = self.service_tier
        if self.provider is not None:
            out["provider"] = self.provider
        if self.error is not None:
            out["error"] = self.error
        return out
