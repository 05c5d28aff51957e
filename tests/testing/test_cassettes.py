"""Cassette files: names and places, merge rules, the ``once`` decision, and writers in two processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.forward.routes import SESSION_ID
from proxy.replay.export import Record
from proxy.testing.cassettes import Cassette, CassetteError, Merge, file_stem, session_name

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(ident: str, session: str, second: int = 0) -> Record:
    return Record(id=ident, session_id=session, started_at=T0 + timedelta(seconds=second), method="POST", path="/v1/x")


def test_names_are_valid_sessions_and_files() -> None:
    plain = session_name("test_mod", "TestChat::test_stream")
    assert plain == "test_mod::TestChat::test_stream"
    odd = [session_name("test_mod", q) for q in ("test_x[a/b c]", "test_x[a-b c]", "test_x[" + "y" * 300 + "]")]
    assert all(SESSION_ID.match(s) for s in odd) and len(set(odd)) == 3, "sanitised names stay distinct"
    assert session_name("_private", "test").startswith("t"), "a session id starts with a letter or digit"
    assert file_stem("TestChat::test_stream[gpt-4o]") == "TestChat.test_stream[gpt-4o]"
    assert file_stem("test_x[a/b]") != file_stem("test_x[a_b]")
    assert "/" not in file_stem("test_x[../../etc]")


def test_where_cassettes_live(tmp_path: Path) -> None:
    test_file = tmp_path / "test_app.py"
    own = Cassette.locate(test_file, "test_chat", None)
    assert (own.path, own.name, own.shared) == (
        tmp_path / "cassettes/test_app/test_chat.jsonl",
        "test_app/test_chat",
        False,
    )
    assert Cassette.locate(test_file, "test_chat", "shared").path == tmp_path / "cassettes/test_app/shared.jsonl"
    assert Cassette.locate(test_file, "test_chat", "common/auth.jsonl").path == tmp_path / "cassettes/common/auth.jsonl"
    for bad in ("../escape", "/abs", "a//b", "sp ace", ""):
        with pytest.raises(CassetteError, match="is not a cassette name"):
            Cassette.locate(test_file, "test_chat", bad)


def test_merge_rules(tmp_path: Path) -> None:
    cassette = Cassette(tmp_path / "c/x.jsonl", "x", shared=True)
    assert cassette.records() == [] and not cassette.exists()
    assert cassette.write([record("a1", "A", 1), record("b1", "B", 2)], Merge.APPEND, "A") == 2
    before = cassette.path.read_bytes()
    assert cassette.write([record("a1", "A", 1)], Merge.APPEND, "A") == 2
    assert cassette.path.read_bytes() == before, "nothing new: the file is not touched"
    cassette.write([record("a2", "A", 3)], Merge.REPLACE_TEST, "A")
    assert [r.id for r in cassette.records()] == ["b1", "a2"], "A's older recordings replaced, B's kept"
    cassette.write([record("c0", "C", 0)], Merge.APPEND, "C")
    assert [r.id for r in cassette.records()] == ["c0", "b1", "a2"], "kept in recorded order"
    cassette.write([record("a3", "A", 4)], Merge.REWRITE, "A")
    assert [r.id for r in cassette.records()] == ["a3"]
    assert sorted(p.name for p in cassette.path.parent.iterdir()) == ["x.jsonl"], "no temporary file left"
    blocked = Cassette(tmp_path / "file/x.jsonl", "x", shared=False)
    (tmp_path / "file").write_text("a file where the folder should be")
    with pytest.raises(CassetteError, match=r"file/x\.jsonl: cannot write it"):
        blocked.write([], Merge.REWRITE, "A")
    cassette.path.write_text('{"format": "llm-recording-proxy/exchanges", "version": 1}\nnot json\n')
    with pytest.raises(CassetteError, match=r"x\.jsonl: line 2"):
        cassette.records()


def test_once_is_decided_per_run(tmp_path: Path) -> None:
    cassette = Cassette(tmp_path / "once.jsonl", "once", shared=True)
    assert cassette.decide_once("run-1"), "no cassette: record"
    cassette.write([record("a", "A")], Merge.APPEND, "A")
    assert cassette.decide_once("run-1"), "made by this run (another worker, a later test): keep recording"
    assert not cassette.decide_once("run-2"), "existed before the run: replay"


def _write_many(path: str, worker: int, count: int, start: Any) -> None:
    cassette = Cassette(Path(path), "shared", shared=True)
    start.wait(60)  # both processes write at the same time, not one after the other's start-up
    for i in range(count):
        cassette.write([record(f"w{worker}-{i}", f"s{worker}-{i}", i)], Merge.APPEND, f"s{worker}-{i}")


def test_two_processes_writing_one_cassette_lose_nothing(tmp_path: Path) -> None:
    """What two xdist workers sharing a cassette do, many times over: every record survives."""
    path = tmp_path / "shared.jsonl"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        start = manager.Barrier(2)
        for done in [pool.submit(_write_many, str(path), w, 30, start) for w in range(2)]:
            done.result(timeout=120)
    ids = [r.id for r in Cassette(path, "shared", shared=True).records()]
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(2) for i in range(30))
