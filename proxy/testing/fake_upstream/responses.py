"""The OpenAI Responses API (``POST /v1/responses``) as the API reference describes it, stream and not.

Streams are semantic events framed ``event: TYPE`` / ``data: JSON`` with a ``sequence_number``, in the
reference's order: ``response.created``, ``response.in_progress``, per output item ``output_item.added``,
its parts and deltas, ``output_item.done``, and a terminal ``response.completed`` carrying the whole
response with its usage. No ``[DONE]``. Models (besides those of ``common``):

- any other model: a message echoing the input word by word.
- ``fake-tools``: a ``function_call`` item whose JSON arguments arrive in pieces.
- ``fake-reasoning``: a reasoning item with a streamed summary, then the message; reasoning and cached
  tokens in usage.
- ``fake-usage-every-event``: every event with a ``response`` carries the usage so far, and a
  ``response.in_progress`` after each delta says how far it got (servers that report usage as they go).
- ``fake-incomplete``: stopped by ``max_output_tokens``: ``response.incomplete``.
- ``fake-failed``: a few deltas, then ``response.failed`` with the response's ``error``.
- ``fake-error-midstream``: a few deltas, then an ``error`` event.
- ``fake-cut``: a few events, then the connection is dropped.

A non-streamed request with ``background: true`` gets the response still ``queued``, with no output.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream import common

CUT_AFTER = 5  # events sent before fake-cut drops the connection, and before a mid-stream failure


def input_text(body: dict[str, Any]) -> str:
    """The text a Responses request asks about: ``input`` as a string, or its last user message."""
    value = body.get("input")
    if isinstance(value, str):
        return value
    for item in reversed(value if isinstance(value, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            texts = [p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "input_text"]
            return " ".join(texts)
    return ""


def _usage(model: str, prompt: int, output: int, reasoning: int) -> dict[str, Any]:
    cached = prompt // 2 if model == "fake-reasoning" else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output + reasoning,
    }


class _Reply:
    """One answer: its items as they end up, and the stream of events that builds them."""

    def __init__(self, request: web.Request, body: dict[str, Any]) -> None:
        self.model = str(body.get("model"))
        control = request.app[common.CONTROL]
        self.pieces = common.echo_pieces(request, input_text(body))
        self.arguments = control.tool_arguments
        self.summary = ["Thinking ", "it ", "over."] if self.model == "fake-reasoning" else []
        created = int(time.time())
        self.ident = f"resp_fake{created}_{len(request.app[common.REQUESTS])}"  # unique: repeated prompts differ
        words = len(input_text(body).split()) + len(str(body.get("instructions") or "").split())
        self.prompt_tokens = words
        self.base: dict[str, Any] = {
            "id": self.ident,
            "object": "response",
            "created_at": created,
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        self.sent: list[bytes] = []
        self.deltas = 0  # sent so far

    def usage(self, final: bool = True) -> dict[str, Any]:
        if not final:
            return _usage(self.model, self.prompt_tokens, self.deltas, 0)
        pieces = -(-len(self.arguments) // 7) if self.model == "fake-tools" else len(self.pieces)
        return _usage(self.model, self.prompt_tokens, pieces, len(self.summary))

    def items(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.summary:
            summary = [{"type": "summary_text", "text": "".join(self.summary)}]
            out.append({"type": "reasoning", "id": f"rs_{self.ident}", "summary": summary})
        if self.model == "fake-tools":
            out.append(
                {
                    "type": "function_call",
                    "id": f"fc_{self.ident}",
                    "call_id": "call_fake1",
                    "name": "get_weather",
                    "arguments": self.arguments,
                    "status": "completed",
                }
            )
        else:
            text = "".join(self.pieces)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            message = {"type": "message", "id": f"msg_{self.ident}", "status": "completed", "role": "assistant"}
            out.append({**message, "content": [part]})
        return out

    def final(self, status: str = "completed", **extra: Any) -> dict[str, Any]:
        return {**self.base, "status": status, "output": self.items(), "usage": self.usage(), **extra}

    def event(self, kind: str, **fields: Any) -> None:
        if "response" in fields and self.model == "fake-usage-every-event":
            fields["response"] = {**fields["response"], "usage": self.usage(final=fields["response"] is not self.base)}
        self.sent.append(common.sse({"type": kind, "sequence_number": len(self.sent), **fields}, event=kind))

    def stream(self) -> list[bytes]:
        self.event("response.created", response=self.base)
        self.event("response.in_progress", response=self.base)
        for index, item in enumerate(self.final()["output"]):
            self._item(index, item)
        if self.model == "fake-incomplete":
            reason = {"reason": "max_output_tokens"}
            self.event("response.incomplete", response=self.final("incomplete", incomplete_details=reason))
        else:
            self.event("response.completed", response=self.final())
        return self.sent

    def _item(self, index: int, item: dict[str, Any]) -> None:
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            self.event("response.output_item.added", output_index=index, item={**item, "summary": []})
            part = {"type": "summary_text", "text": ""}
            self.event("response.reasoning_summary_part.added", **at, summary_index=0, part=part)
            for piece in self.summary:
                self._delta("response.reasoning_summary_text.delta", at, piece, summary_index=0)
            text = item["summary"][0]["text"]
            self.event("response.reasoning_summary_text.done", **at, summary_index=0, text=text)
            self.event("response.reasoning_summary_part.done", **at, summary_index=0, part=item["summary"][0])
        elif item["type"] == "function_call":
            self.event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for j in range(0, len(self.arguments), 7):
                self._delta("response.function_call_arguments.delta", at, self.arguments[j : j + 7])
            self.event("response.function_call_arguments.done", **at, arguments=self.arguments, name=item["name"])
        else:
            self.event(
                "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
            )
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self.event("response.content_part.added", **at, content_index=0, part=empty)
            for piece in self.pieces:
                self._delta("response.output_text.delta", at, piece, content_index=0, logprobs=[])
            text = item["content"][0]["text"]
            self.event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            self.event("response.content_part.done", **at, content_index=0, part=item["content"][0])
        self.event("response.output_item.done", output_index=index, item=item)

    def _delta(self, kind: str, at: dict[str, Any], piece: str, **fields: Any) -> None:
        self.event(kind, **at, **fields, delta=piece)
        self.deltas += 1
        if self.model == "fake-usage-every-event":
            self.event("response.in_progress", response=self.base)


async def responses(request: web.Request) -> web.StreamResponse:
    body = await common.read_openai_request(request)
    if isinstance(body, web.Response):
        return body
    reply = _Reply(request, body)
    if not body.get("stream"):
        await common.pause(request)
        # A background request is answered at once, before it has run (the client polls for the rest).
        answer = {**reply.base, "status": "queued", "background": True} if body.get("background") else reply.final()
        return web.json_response(answer, headers={"x-request-id": "req_fake_ok"})
    events = reply.stream()
    if reply.model == "fake-failed":
        error = {"code": "server_error", "message": "The model failed to finish the response."}
        reply.sent = events[:CUT_AFTER]
        reply.event("response.failed", response={**reply.base, "status": "failed", "error": error})
        events = reply.sent
    elif reply.model == "fake-error-midstream":
        reply.sent = events[:CUT_AFTER]
        reply.event("error", code="server_error", message="provider overloaded mid-generation", param=None)
        events = reply.sent
    elif reply.model == "fake-cut":
        events = events[:CUT_AFTER]
    return await common.send_stream(request, events, cut_after=reply.model == "fake-cut")


ROUTES = [web.post("/v1/responses", responses)]
