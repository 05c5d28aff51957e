"""The in-process proxy's pieces: the settings a cassette's proxy gets, and the shared template database."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from proxy.config import ConfigError, Exhausted, Mode
from proxy.store import db, migrate
from proxy.testing.inprocess import LoopThread, NeedsUpstream, migrated_template, proxy_settings
from proxy.testing.modes import Options, RecordMode, proxy_mode


def test_a_replaying_proxy_has_no_upstream_at_all(tmp_path: Path) -> None:
    options = Options(record_mode=RecordMode.NONE, upstream="http://127.0.0.1:9/v1")
    replay = proxy_settings(Mode.REPLAY, options, {"on_exhausted": "cycle"}, tmp_path, ["a"])
    assert replay.upstream.url == "" and replay.upstreams == {}, "nothing it could connect to"
    assert (replay.replay.sessions, replay.replay.on_exhausted, replay.replay.include_partial) == (
        ["a"],
        Exhausted.CYCLE,
        True,
    )
    assert str(tmp_path) in replay.database.url and str(tmp_path) in replay.recorder.spool_dir
    recording = proxy_settings(Mode.RECORD, options, {}, tmp_path, [])
    assert recording.upstream.url == options.upstream and set(recording.upstreams) == {"anthropic"}
    with pytest.raises(NeedsUpstream, match="needs --llm-upstream URL"):
        proxy_settings(Mode.AUTO, Options(record_mode=RecordMode.NEW), {}, tmp_path, [])
    with pytest.raises(ConfigError, match=r"replay\.speed"):
        proxy_settings(Mode.REPLAY, options, {"speed": 0}, tmp_path, [])


def test_record_modes_map_onto_proxy_modes() -> None:
    assert [proxy_mode(m, recording_once=False) for m in RecordMode] == [
        Mode.REPLAY,
        Mode.REPLAY,
        Mode.AUTO,
        Mode.RECORD,
    ]
    assert proxy_mode(RecordMode.ONCE, recording_once=True) is Mode.RECORD


def test_the_template_is_migrated_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loop = LoopThread()
    try:
        template = migrated_template(loop)
        made = template.stat().st_mtime_ns
        assert migrated_template(loop) == template and template.stat().st_mtime_ns == made, "not migrated again"
        assert [p.name for p in template.parent.iterdir() if p.name.startswith(".")] == [], "no partial file left"

        async def revision() -> str | None:
            engine = db.create_engine(f"sqlite+aiosqlite:///{template}")
            try:
                return await migrate.current_revision(engine)
            finally:
                await engine.dispose()

        assert loop.call(revision()) == migrate.head_revision()
    finally:
        loop.stop()
