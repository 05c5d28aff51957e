"""Settings precedence and the one-line errors a bad configuration gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, Mode, Price, load_settings, secret_from_env

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return str(path)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.listen == "127.0.0.1:8080"
    assert settings.database.url == "sqlite+aiosqlite:///proxy.db"
    assert settings.mode is Mode.RECORD
    assert settings.upstream.read_timeout == 300 and settings.upstream.total_timeout == 0


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listen = "127.0.0.1:7000"
[upstream]
url = "http://toml.example/v1"
connect_timeout = 3
[database]
url = "sqlite+aiosqlite:///toml.db"
""",
    )
    env = {
        "PROXY_UPSTREAM_URL": "http://env.example/v1",
        "PROXY_LISTEN": "127.0.0.1:7001",
        "PROXY_UPSTREAM_API_KEY": "sk-env",
        "PROXY_RECORDER_BATCH_SIZE": "50",
    }
    settings = load_settings(path, {"listen": "127.0.0.1:7002"}, env)
    assert settings.listen == "127.0.0.1:7002"  # flag beats env beats TOML
    assert settings.upstream.url == "http://env.example/v1"  # env beats TOML
    assert settings.upstream.connect_timeout == 3  # TOML beats default
    assert settings.upstream.api_key == "sk-env"
    assert settings.recorder.batch_size == 50  # env strings are converted
    assert settings.database.url == "sqlite+aiosqlite:///toml.db"


def test_config_file_from_env_and_local_proxy_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.toml"
    other.write_text('listen = "127.0.0.1:9001"\n')
    assert load_settings(env={"PROXY_CONFIG": str(other)}).listen == "127.0.0.1:9001"
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'listen = "127.0.0.1:9002"\n')
    assert load_settings(env={}).listen == "127.0.0.1:9002"


def test_named_upstreams(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstreams.openrouter]\nurl = "https://openrouter.ai/api/v1"\nread_timeout = 60\n')
    settings = load_settings(path, env={})
    assert settings.upstreams["openrouter"].read_timeout == 60
    assert set(settings.all_upstreams()) == {"default", "openrouter"}


@pytest.mark.parametrize(
    ("toml", "flags", "message"),
    [
        ("bogus = 1\n", {}, "unknown field `bogus`"),
        ('[upstream]\nurll = "x"\n', {}, "upstream: Object contains unknown field `urll`"),
        ("", {"upstream": {"url": "ftp://x"}}, "upstream.url: not an http(s) URL"),
        ("", {"upstream": {"url": "nohost"}}, "upstream.url: not an http(s) URL"),
        ('[upstreams.x]\nurl = "bad"\n', {}, "upstreams.x.url"),
        ('listen = "nope"\n', {}, "listen: expected HOST:PORT"),
        ('[database]\nurl = "mysql://x"\n', {}, "database.url: unsupported"),
        ('[upstream]\nread_timeout = "slow"\n', {}, "upstream.read_timeout"),
        ('mode = "fast"\n', {}, "mode: Invalid enum value 'fast' (valid: record, replay, auto, passthrough)"),
        ("[upstream]\nconnect_timeout = -5\n", {}, "upstream.connect_timeout: must be >= 0, got -5"),
        ('[upstreams.or]\nurl = "http://x/v1"\nread_timeout = -1\n', {}, "upstreams.or.read_timeout: must be >= 0"),
        ("[replay]\nspeed = 0\n", {}, "replay.speed: must be > 0"),
        ('[replay]\non_exhausted = "loop"\n', {}, "replay.on_exhausted: Invalid enum value 'loop' (valid: error, "),
        ('[replay]\nignore = ["a/b"]\n', {}, "replay.ignore: 'a/b' is neither"),
        ("x = [", {}, "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, flags: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml), flags, env={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROXY_MODE": "bogus"}, "mode: Invalid enum value 'bogus' (valid: record, replay, auto, passthrough) "
         "(from PROXY_MODE)"),
        ({"PROXY_RECORDER_BATCH_SIZE": "many"}, "recorder.batch_size: Expected `int`, got `str` "
         "(from PROXY_RECORDER_BATCH_SIZE)"),
        ({"PROXY_UPSTREAM_CONNECT_TIMEOUT": "soon"}, "(from PROXY_UPSTREAM_CONNECT_TIMEOUT)"),
    ],
)  # fmt: skip
def test_a_bad_environment_value_names_its_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, ""), env=env)
    assert message in str(err.value)


def test_a_flag_overriding_the_variable_is_not_blamed_on_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, ""), {"mode": "nope"}, env={"PROXY_MODE": "record"})
    assert "PROXY_MODE" not in str(err.value)


def test_a_mistyped_variable_is_a_warning_naming_the_closest_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"PROXY_UPSTREAM_UR": "http://x/v1", "PROXY_DATABSE_URL": "x", "PROXY_CONFIG": "", "PROXY_TEST_X": "1"}
    with caplog.at_level("WARNING", logger="proxy.config"):
        load_settings(write(tmp_path, ""), env=env)
    assert caplog.messages == [
        "proxy: warning: PROXY_DATABSE_URL is not a setting and is ignored; did you mean PROXY_DATABASE_URL?",
        "proxy: warning: PROXY_UPSTREAM_UR is not a setting and is ignored; did you mean PROXY_UPSTREAM_URL?",
    ]


def test_upstream_required_for_serving(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.url: an upstream URL is required"):
        load_settings(write(tmp_path, ""), env={}, require_upstream=True)


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = ROOT / "config.example.toml"
    settings = load_settings(str(example), env={})
    text = example.read_text()
    for section in ("", "upstream", "server", "database", "recorder", "retention", "replay"):
        struct = settings if not section else getattr(settings, section)
        for name in struct.__struct_fields__:
            if name in (
                "upstreams",
                "upstream",
                "server",
                "database",
                "recorder",
                "retention",
                "replay",
                "pricing",
                "model_aliases",
            ):
                continue  # sections, not keys
            assert f"\n{name} = " in text or f"\n# {name} = " in text, f"{section}.{name} not documented"
    assert '\n# [pricing."' in text and "\n[model_aliases]" in text
    for name in Price.__struct_fields__:
        assert f"\n# {name} = " in text, f"pricing.{name} not documented"


def test_replay_mode_needs_no_upstream(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'mode = "replay"\n'), env={}, require_upstream=True)
    assert settings.mode is Mode.REPLAY and settings.upstream.url == ""
    env = {"PROXY_MODE": "auto", "PROXY_REPLAY_SESSIONS": "[a, b]", "PROXY_REPLAY_SPEED": "10"}
    with pytest.raises(ConfigError, match=r"upstream\.url"):
        load_settings(write(tmp_path, ""), env=env, require_upstream=True)
    settings = load_settings(write(tmp_path, ""), env=env)
    assert settings.replay.sessions == ["a", "b"] and settings.replay.speed == 10


def test_secret_from_env_names_the_variable_never_the_value() -> None:
    assert secret_from_env("MY_KEY", {"MY_KEY": "sk-1"}) == "sk-1"
    with pytest.raises(ConfigError, match=r"^NOPE: environment variable is not set$"):
        secret_from_env("NOPE", {})


@pytest.mark.parametrize(
    ("url", "warning"),
    [
        ("https://api.openai.com/v1", None),
        ("https://openrouter.ai/api/v1/", None),
        ("https://generativelanguage.googleapis.com/v1beta/openai", None),
        ("https://api.openai.com", "has no path: /v1/chat/completions goes to https://api.openai.com/chat/completions"),
        ("https://openrouter.ai/api", "has no version segment such as /v1"),
        ("https://api.openai.com/v1/chat/completions", "names an endpoint: give the API's base URL (https://api.openai.com/v1)"),
    ],
)  # fmt: skip
def test_upstream_url_whose_path_looks_wrong_is_warned_about(url: str, warning: str | None) -> None:
    from proxy.config_text import upstream_url_warning

    found = upstream_url_warning("upstream.url", url)
    assert (found is None) if warning is None else (found is not None and warning in found), found
