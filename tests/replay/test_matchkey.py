"""The match key is a pure function: what changes it, what never does, and how a miss is explained."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.replay.matchkey import (
    DEFAULT_RULES,
    MISSING,
    KeyRules,
    canonical_body,
    differences,
    format_pointer,
    match_key,
    parse_pointer,
)

BASE = {
    "model": "gpt-x",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    "temperature": 0.5,
}
PATH = "/v1/chat/completions"


def key(body: object, rules: KeyRules = DEFAULT_RULES, **kw: str) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return match_key(kw.get("method", "POST"), kw.get("path", PATH), raw, rules, kw.get("upstream", "default"))


def test_key_shape_and_rules_prefix() -> None:
    k = key(BASE)
    assert len(k) == 64 and all(c in "0123456789abcdef" for c in k)
    assert DEFAULT_RULES.owns(k)
    other = KeyRules(["temperature"])
    assert other.id != DEFAULT_RULES.id and not other.owns(k)
    assert KeyRules(["temperature"]).id == other.id, "rules id is stable"
    assert KeyRules(["b", "a"]).id == KeyRules(["a", "b", "a"]).id, "order and repeats do not matter"


def test_always_ignored_fields_do_not_change_the_key() -> None:
    noisy = {**BASE, "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "metadata": {"x": 1}}
    assert key(noisy) == key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.6},
        {"model": "gpt-y"},
        {"n": 2},
        {"messages": [{"role": "user", "content": "hello"}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
    ],
)
def test_fields_that_change_the_answer_change_the_key(change: dict) -> None:
    assert key({**BASE, **change}) != key(BASE)


def test_method_path_upstream_take_part_and_headers_cannot() -> None:
    assert key(BASE, method="PUT") != key(BASE)
    assert key(BASE, path="/v1/completions") != key(BASE)
    assert key(BASE, upstream="openrouter") != key(BASE)
    # The function has no header parameter at all: Authorization cannot take part by construction.
    assert "headers" not in match_key.__code__.co_varnames


def test_canonical_form_sorted_compact_integral_floats() -> None:
    a = b'{ "temperature": 1.0, "model": "m",\n "messages": [] }'
    b = b'{"messages":[],"model":"m","temperature":1}'
    assert canonical_body(a) == canonical_body(b) == b'{"messages":[],"model":"m","temperature":1}'
    assert key(a) == key(b)
    assert key(b'{"temperature": 1.5}') != key(b'{"temperature": 1}')


def test_integral_floats_at_any_depth_and_numbers_past_the_double_range() -> None:
    nested = b'{"a":[{"b":-0.0,"c":1e2,"d":2.5}],"e":1e16,"f":9007199254740991.0}'
    assert canonical_body(nested) == b'{"a":[{"b":0,"c":100,"d":2.5}],"e":1e16,"f":9007199254740991}'
    # Past 2**53 a float is not an exact integer: it stays a float. Past the double range it is no JSON
    # the key can read: hashed as sent, as before.
    assert canonical_body(b'{"a":[1E400]}') == b'{"a":[1E400]}'
    assert canonical_body(b"[12345678901234567890123, 1.5e300]") == b"[12345678901234567890123,1.5e300]"


def test_non_json_bodies_are_hashed_as_sent() -> None:
    assert canonical_body(b"not json {") == b"not json {"
    assert key(b"not json {") != key(b"not json  {")
    assert key(b"") == key(b"   "), "an empty body is one thing"


def test_configured_names_and_pointers() -> None:
    rules = KeyRules(["temperature", "/messages/0/content", "/tools/*/function/description"])
    tools = [{"type": "function", "function": {"name": "f", "description": "v1"}}]
    a = {**BASE, "tools": tools}
    b = {
        **BASE,
        "temperature": 0.9,
        "messages": [{"role": "system", "content": "other"}, BASE["messages"][1]],
        "tools": [{"type": "function", "function": {"name": "f", "description": "v2"}}],
    }
    assert key(a, rules) == key(b, rules)
    assert key(a) != key(b)
    # The pointer removes only what it names: the user message still counts.
    c = {**b, "messages": [b["messages"][0], {"role": "user", "content": "bye"}]}
    assert key(c, rules) != key(a, rules)


def test_pointer_escapes_and_wildcards_on_lists() -> None:
    assert parse_pointer("/a~1b/~0c") == ("a/b", "~c")
    assert format_pointer(["a/b", "~c", 0]) == "/a~1b/~0c/0"
    rules = KeyRules(["/extra/*"])
    assert key({"extra": [1, 2, 3], "x": 1}, rules) == key({"extra": [], "x": 1}, rules)
    assert key({"extra": {"p": 1}, "x": 1}, rules) == key({"extra": {"q": 2}, "x": 1}, rules)
    # A pointer into something that is not there is harmless.
    assert key({"x": 1}, KeyRules(["/nothing/here/0"])) == key({"x": 1}, KeyRules(["/nothing/here/0"]))
    with pytest.raises(ValueError):
        parse_pointer("no-slash")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.randoms())
def test_key_ignores_object_key_order_and_whitespace(obj: dict, rnd: random.Random) -> None:
    items = list(obj.items())
    rnd.shuffle(items)
    shuffled = json.dumps(dict(items), indent=rnd.choice([None, 2]))
    assert key(shuffled.encode()) == key(json.dumps(obj).encode())


def test_differences_name_each_field() -> None:
    recorded = {**BASE, "temperature": 0.7, "messages": [*BASE["messages"], {"role": "user", "content": "more"}]}
    request = {**BASE, "top_p": 1}
    diffs = differences(request, recorded)
    assert [d.path for d in diffs] == ["/messages/2", "/temperature", "/top_p"]
    assert diffs[0].request is MISSING and diffs[0].recorded == {"role": "user", "content": "more"}
    assert diffs[1].describe() == "/temperature: 0.5 (recorded 0.7)"
    assert diffs[2].describe() == "/top_p: 1 (recorded absent)"


def test_long_strings_are_shown_where_they_part() -> None:
    same = "word " * 40
    diffs = differences({"c": same + "apple"}, {"c": same + "pear"})
    text = diffs[0].describe()
    assert "apple" in text and "pear" in text and len(text) < 250


def test_type_changes_are_differences() -> None:
    assert [d.path for d in differences({"a": 1, "b": True}, {"a": "1", "b": 1})] == ["/a", "/b"]
    assert differences({"a": [1, {"b": 2}]}, msgspec.json.decode(b'{"a": [1, {"b": 2}]}')) == []
