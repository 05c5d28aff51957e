"""Masking secrets in bodies."""

from __future__ import annotations

import logging

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.apis.codec import ANY_DECODER
from proxy.record.exchange import Exchange
from proxy.record.redact import BodyRedactor, LogScrubber, Redactor, redact_headers


def test_body_redactor_rules() -> None:
    redact = BodyRedactor()
    data = b'{"a": "sk-or-v1-0123456789abcdef0123", "b": "task-0123456789abcdef0123", "c": "sk-short"}'
    out = redact(data)
    assert len(out) == len(data) and ANY_DECODER.decode(out)["a"] == "sk-" + "*" * 26
    assert b"task-0123456789abcdef0123" in out and b"sk-short" in out
    assert BodyRedactor([])(data) == data
    assert BodyRedactor([r"secret-\d+"])(b"x secret-12345 y") == b"x sec********* y"
    bearer = b'{"h": "Authorization: Bearer abcdefghijklmnop0123", "l": "BEARER abcdefghijklmnop0123"}'
    assert redact(bearer) == bearer.replace(b"abcdefghijklmnop0123", b"abc" + b"*" * 17)
    # A capturing group masks only the group; the literal before it stays readable.
    assert BodyRedactor([r"token=(\w{6,})"])(b"a token=abcdefgh b") == b"a token=abc***** b"


GEMINI_KEY = "AIzaSyD-0123456789abcdefghijklmnopqrstu"


def test_query_credentials_are_redacted_and_returned_for_the_fingerprint() -> None:
    redactor = Redactor()
    query, found = redactor.query(f"alt=sse&KEY={GEMINI_KEY}&api%5Fkey=b&token=&sig=c%2Bd&keys=e")
    assert query == "alt=sse&KEY=[redacted]&api%5Fkey=[redacted]&token=[redacted]&sig=[redacted]&keys=e"
    assert found == GEMINI_KEY
    assert redactor.query(query) == (query, None), "idempotent: a redacted query yields no credential"
    assert redactor.query("") == ("", None)
    assert Redactor(query_params=["x-goog-key"]).query("key=a&X-Goog-Key=b") == ("key=a&X-Goog-Key=[redacted]", "b")


def test_free_text_loses_query_credentials_header_lines_and_key_shaped_values() -> None:
    redactor = Redactor()
    error = f"ClientResponseError: 400, message='x', url='http://h:1/v1/chat?alt=sse&key={GEMINI_KEY}'"
    assert (
        redactor.text(error) == "ClientResponseError: 400, message='x', url='http://h:1/v1/chat?alt=sse&key=[redacted]'"
    )
    head = f"b'POST / HTTP/1.1\\nHost: x\\nAuthorization: Bearer {GEMINI_KEY}\\nX-Api-Key: {GEMINI_KEY}\\x01'"
    redacted = "b'POST / HTTP/1.1\\nHost: x\\nAuthorization: [redacted]\\nX-Api-Key: [redacted]\\x01'"
    assert redactor.text(head) == redacted
    assert redactor.text("user sk-proj-0123456789abcdefghij") == "user sk-" + "*" * 25
    assert Redactor(headers=["x-tenant-secret"]).text("X-Tenant-Secret: abc") == "X-Tenant-Secret: [redacted]"
    for text in (error, head):
        once = redactor.text(text)
        assert redactor.text(once) == once
    assert redactor.text("caf\udce9 ok") == "caf\udce9 ok", "surrogate-escaped bytes are kept, not an error"


def test_every_field_of_a_record_taken_from_input_is_masked() -> None:
    key = "sk-proj-0123456789abcdefghijklmn"
    masked = "sk-" + "*" * (len(key) - 3)
    ex = Exchange(
        method="POST",
        path=f"/v1/files/{key}",
        query=f"key={GEMINI_KEY}",
        session_id=key,
        user=key,
        requested_model=key,
        request_headers={"user-agent": f"app/{key}", "referer": f"http://x/?token={GEMINI_KEY}"},
        request_body=f'{{"user": "{key}"}}'.encode(),
        response_headers={"x-echo": key},
        error=f"url='http://h/v1?sig={GEMINI_KEY}'",
    )
    Redactor().exchange(ex)
    assert ex.path == f"/v1/files/{masked}" and ex.query == "key=[redacted]"
    assert ex.session_id == ex.user == ex.requested_model == masked
    assert ex.request_headers == {"user-agent": f"app/{masked}", "referer": "http://x/?token=[redacted]"}
    assert ex.response_headers == {"x-echo": masked} and ex.request_body == f'{{"user": "{masked}"}}'.encode()
    assert ex.error == "url='http://h/v1?sig=[redacted]'"
    assert GEMINI_KEY not in repr(ex) and key not in repr(ex)


def test_log_scrubber_masks_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.scrubbed")
    scrubber = LogScrubber(Redactor(), ["configured-secret-value", "short"])
    logger.addFilter(scrubber)
    try:
        with caplog.at_level(logging.DEBUG, logger="tests.scrubbed"):
            logger.debug("GET %s", f"/v1/models?key={GEMINI_KEY}")
            try:
                raise ValueError(f"Authorization: Bearer {GEMINI_KEY}")
            except ValueError:
                logger.exception("failed %d", 1)
            logger.info("bad %s %s", "format")  # a broken format string still logs, scrubbed
            logger.info("admin token is %s", "configured-secret-value")  # any shape, from the configuration
    finally:
        logger.removeFilter(scrubber)
    assert "GET /v1/models?key=[redacted]" in caplog.text and "Authorization: [redacted]" in caplog.text
    assert GEMINI_KEY not in caplog.text and "configured-secret-value" not in caplog.text
    assert "admin token is [redacted]" in caplog.text and len(caplog.records) == 4


@pytest.mark.parametrize("seed", range(4))
def test_masking_a_window_at_a_time_equals_one_pass(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies are masked a window at a time (the writer yields between windows); wherever the windows
    fall, secrets straddling them, longer than them or back to back are masked exactly as in one pass."""
    import random

    import proxy.record.redact as redact_module

    rng = random.Random(seed)
    parts = [b"sk-", b" Bearer ", b"bearer ", b" ", b"x", b"-", b"abcdefghij", b"Q1", b'"']
    redactor = Redactor()
    bodies = [b"".join(rng.choice(parts) for _ in range(rng.randint(0, 80))) for _ in range(400)]
    monkeypatch.setattr(redact_module, "WINDOW", 1 << 20)
    whole = [redactor(body) for body in bodies]
    assert sum(w != b for w, b in zip(whole, bodies, strict=True)) > 100, "secrets in most bodies"
    for body, expected in zip(bodies, whole, strict=True):
        monkeypatch.setattr(redact_module, "WINDOW", rng.randint(1, 40))
        monkeypatch.setattr(redact_module, "OVERLAP", rng.randint(20, 60))  # over the patterns' 17
        assert redactor(body) == expected


def test_one_window_in_one_go_equals_its_steps() -> None:
    """A body of one window is masked without the steps' generator; the same bytes come out, for every kind
    of pattern (a capturing group, one that can match nothing, overlapping ones)."""
    from proxy.record.slices import run_through

    redactor = BodyRedactor([r"sk-[a-z]{4,}", r"id=(\d+)", r"x*", r"[a-z]{6}"])
    for data in (b"", b"plain", b"a sk-abcdefgh id=12345 b", b"sk-abcdefghij" * 3, b"xxxx sk-zz"):
        assert redactor(data) == run_through(redactor.steps(data))
    assert Redactor().text("model-name") == "model-name" and Redactor().text("a=sk-" + "k" * 20) == "a=sk-" + "*" * 20


@pytest.mark.parametrize("seed", range(3))
def test_free_text_skipped_only_where_it_could_not_match(seed: int) -> None:
    """``text`` runs the free-text regex only on text holding ``=`` or ``:`` and one of its names: the same
    masks as running it on everything, in any case, with configured names and non-ASCII text too."""
    import random

    rng = random.Random(seed)
    parts = ["key", "KEY", "Api-Key", "=", ":", " ", "x", "token", "Authorization", "cookie", "'", "abcdefghij"]
    parts += ["sk-", "\n", "?", "&", "sig", "Set-Cookie", "é", "X-Tenant", "k"]
    for redactor in (Redactor(), Redactor(headers=["x-tenant"]), Redactor(headers=["x-ténant"])):
        always = Redactor(headers=sorted(redactor.headers))
        always._names = None  # the regex on every text, as before the shortcut
        texts = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 14))) for _ in range(3000)]
        assert sum(always.text(t) != t for t in texts) > 200, "credentials in many texts"
        assert [redactor.text(t) for t in texts] == [always.text(t) for t in texts]


def test_headers_for_storage_lower_cased_secrets_masked_repeats_joined() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer sk-secret-value-0123456789"),
                ("X-Trace", "1"),
                ("x-trace", "2"),
                ("X-Api-Key", "k"),
                ("X-Internal", "i"),
            ]
        )
    )
    assert redact_headers(headers, frozenset({"x-internal"})) == {
        "content-type": "application/json",
        "authorization": "[redacted]",
        "x-trace": "1, 2",
        "x-api-key": "[redacted]",
        "x-internal": "[redacted]",
    }
    assert redact_headers(CIMultiDictProxy(CIMultiDict([("Set-Cookie", "a"), ("set-cookie", "b")]))) == {
        "set-cookie": "[redacted]"
    }
