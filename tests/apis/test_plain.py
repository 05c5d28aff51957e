"""Paths without a family of their own, through the proxy with the openai SDK: recorded as ``other``,
complete (never an error) when complete, with the usage their bodies or streams carry."""

from __future__ import annotations

import json

from tests.support import Proxy
from tests.support.folding import finished_body


async def test_images_audio_and_files_are_recorded_as_other_with_their_usage(proxy: Proxy) -> None:
    client = proxy.client()
    image = await client.images.generate(model="gpt-image-1", prompt="a cat on a mat")
    speech = await client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hello there")
    async with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input="three words here", stream_format="sse"
    ) as streamed:
        events = [
            json.loads(line[6:]) for line in [x async for x in streamed.iter_lines()] if line.startswith("data: ")
        ]
    text = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", b"RIFF fake wav"))
    listed = await client.files.list()
    assert image.usage is not None and speech.content and events[-1]["type"] == "speech.audio.done"
    assert text.text == "hello from the fake" and listed.data == []
    rows = {r["path"]: r for r in await proxy.rows()}
    assert {r["api"] for r in rows.values()} == {"other"}
    assert {(r["outcome"], r["status"], r["error"]) for r in rows.values()} == {("complete", 200, None)}
    tokens = {path: (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) for path, r in rows.items()}
    assert tokens["/v1/images/generations"] == (5, 272, 277)
    assert tokens["/v1/audio/transcriptions"] == (14, 5, 19)
    assert tokens["/v1/files"] == (None, None, None), "no usage reported: unknown, not 0"
    speech_rows = [r for r in await proxy.rows() if r["path"] == "/v1/audio/speech"]
    assert sorted((r["stream"], r["prompt_tokens"]) for r in speech_rows) == [(False, None), (True, 3)]


def test_usage_in_the_responses_naming_is_read_and_a_total_alone_is_not_made_more_of() -> None:
    ex = finished_body("/v1/images/edits", b'{"usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}}')
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens, ex.usage.total_tokens) == (3, 4, 7)
    ex = finished_body("/v1/moderations", b'{"usage": {"total_tokens": 7}}')
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens, ex.usage.total_tokens) == (None, None, 7)
    ex = finished_body("/v1/audio/transcriptions", b'{"text": "x", "usage": {"type": "duration", "seconds": 3}}')
    assert ex.usage.source == "missing" and ex.outcome == "complete"
