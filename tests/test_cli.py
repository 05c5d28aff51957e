"""The ``proxy`` command: configuration errors, python -m and the console script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli import PY, clean_env, run_cli


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve"], {}, "upstream.url: an upstream URL is required (--upstream URL, PROXY_UPSTREAM_URL or [upstream] "
                        "url; --demo serves a built-in demo upstream)"),
        (["serve", "--upstream", "ftp://nope"], {}, "upstream.url: not an http(s) URL"),
        (["serve", "--upstream", "http://x/v1", "--listen", "oops"], {}, "listen: expected HOST:PORT"),
        (["serve", "--upstream", "http://x/v1"], {"PROXY_RECORDER_BATCH_SIZE": "many"}, "recorder.batch_size"),
        (
            ["serve", "--upstream", "http://x/v1", "--db", "postgresql+asyncpg://u@127.0.0.1:1/x"],
            {},
            "database.url: cannot connect to postgresql+asyncpg://u@127.0.0.1:1/x",
        ),
        (["db", "current", "--db", "sqlite+aiosqlite:////nonexistent-dir/x.db"], {}, "database.url: no proxy database"),
        (["db", "upgrade", "--db", "sqlite+aiosqlite:////nonexistent-dir/x.db"], {}, "database.url: cannot connect"),
        (["usage", "--by", "colour"], {}, "proxy usage: error: --by: unknown grouping 'colour'"),
        (["logs", "--since", "yesterday-ish"], {}, "proxy logs: error: "),
        (["show", "x", "--session", "s"], {}, "proxy show: error: give an exchange id or --session, not both"),
        (["serve", "--demo"], {"PROXY_MODE": "bogus"}, "(valid: record, replay, auto, passthrough) (from PROXY_MODE)"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_mistyped_variable_is_warned_about_and_the_command_still_runs(tmp_path: Path) -> None:
    result = run_cli("serve", "--demo", "--listen", "oops", cwd=tmp_path, env={"PROXY_LISTN": "127.0.0.1:1"})
    assert result.stderr.splitlines()[0] == (
        "proxy: warning: PROXY_LISTN is not a setting and is ignored; did you mean PROXY_LISTEN?"
    )


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    script = Path(PY).with_name("proxy")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    for cmd in ([PY, "-m", "proxy", "--help"], [str(script), "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "serve" in out.stdout and "db" in out.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["serve", "--bogus"], "proxy serve: unrecognized arguments: --bogus (see proxy serve --help)"),
        (["usage", "--format", "nope"], "proxy usage: argument --format: invalid choice: 'nope' (choose from "
                                        "'table', 'json', 'csv') (see proxy usage --help)"),
        (["db", "upgrade", "--x", "1"], "proxy db upgrade: unrecognized arguments: --x 1 (see proxy db upgrade "),
        # A group given no subcommand names its choices, never argparse's internal dest (db_command).
        (["db"], "proxy db: choose a subcommand: upgrade, current (see proxy db --help)"),
        ([], "proxy: choose a command: serve, db, prune, export, import, replay, usage, sessions, logs, show (see "),
        (["db", "x"], "proxy db: argument subcommand: invalid choice: 'x' (choose from 'upgrade', 'current') (see "),
        (["serve", "--listen"], "proxy serve: argument --listen: expected one argument (see proxy serve --help)"),
        (["--bogus", "serve"], "proxy: unrecognized arguments: --bogus (see proxy --help)"),
        (["colour"], "proxy: argument command: invalid choice: 'colour' (choose from "),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command(tmp_path: Path, args: list[str], line: str) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line), result.stderr


def test_help_still_shows_the_usage_block(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: proxy serve [-h]") and "--upstream" in result.stdout


def test_ctrl_c_while_a_module_runs_source_text_exits_130(tmp_path: Path) -> None:
    """A Ctrl-C that lands while a module that is loading runs code from source text (``exec`` of a string,
    as dataclasses, namedtuple and SQLAlchemy do) is caught as any other: exit code 130, nothing said.
    CPython would still kill ``python -m proxy`` with SIGINT at exit (-2), as if nobody had caught it."""
    (tmp_path / "interrupted_proxy.py").write_text(
        "import sys\n"
        "from proxy import cli\n"
        "def loading():\n"
        "    exec('import signal; signal.raise_signal(signal.SIGINT)')\n"
        "cli.build_parser = loading\n"
        "sys.exit(cli.main(['usage']))\n"
    )
    out = subprocess.run(
        [PY, "-m", "interrupted_proxy"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stderr) == (130, "")
