"""Text as both databases and the spool hold it: plain records pass untouched, odd bytes become \\xNN."""

from __future__ import annotations

from proxy.record.exchange import Exchange
from proxy.record.storable import headers, make_storable, text


def test_a_plain_record_keeps_its_very_objects() -> None:
    request = {"content-type": "application/json", "user-agent": "sdk/1.0"}
    response = {"content-type": "application/json"}
    ex = Exchange(path="/v1/chat/completions", requested_model="m", request_headers=request, response_headers=response)
    path = ex.path
    make_storable(ex)
    assert ex.request_headers is request and ex.response_headers is response and ex.path is path


def test_each_field_and_header_that_is_not_plain_text_is_written_as_escapes() -> None:
    ex = Exchange(
        path="/v1/caf\udce9",
        requested_model="fake\x00model",
        user="café",  # valid UTF-8 is kept as it is
        request_headers={"x-note": "\udcff\udcfe", "accept": "*/*"},
        response_headers={"x-\udce9": "v", "content-type": "a\x00b"},
    )
    make_storable(ex)
    assert (ex.path, ex.requested_model, ex.user) == ("/v1/caf\\xe9", "fake\\x00model", "café")
    assert ex.request_headers == {"x-note": "\\xff\\xfe", "accept": "*/*"}
    assert ex.response_headers == {"x-\\xe9": "v", "content-type": "a\\x00b"}


def test_text_and_headers_return_what_they_were_given_when_nothing_changes() -> None:
    plain = {"a": "b"}
    unicode = {"ä": "ö"}
    assert headers(plain) is plain and headers(unicode) is unicode and headers({}) == {}
    value = "naïve"
    assert text(value) is value
