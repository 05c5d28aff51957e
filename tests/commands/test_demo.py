"""``proxy serve --demo`` (what ``make serve`` runs with no UPSTREAM): answered, streamed, recorded, no key."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import openai

from tests.support.cli import PY, children, clean_env, ends_soon, run_cli, start_serve, stop_serve, writer_of

ROOT = Path(__file__).parent.parent.parent


def test_demo_answers_streams_and_records_without_a_key(tmp_path: Path) -> None:
    proc, port = start_serve("--demo", cwd=tmp_path)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "hello proxy"}]
        )
        assert "no key" in raw.headers["x-demo-upstream"]
        assert raw.parse().choices[0].message.content.strip() == "Echo: hello proxy"
        stream = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "stream this"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.strip() == "Echo: stream this"
        (demo,) = children(proc.pid)
    finally:
        code, log = stop_serve(proc)
    assert code == 0, log
    first = log.splitlines()[0]
    assert "demo upstream" in first and "no key" in first, log
    assert "stopped: streams drained, 2 records written" in log.splitlines()[-1], log
    usage = run_cli("usage", "--by", "model", "--format", "csv", cwd=tmp_path)  # ./proxy.db, as usual
    assert usage.returncode == 0 and usage.stdout.splitlines()[1].startswith("demo,2,"), usage.stdout
    assert ends_soon(demo), "the demo upstream ends with the proxy"


def test_demo_upstream_exits_when_the_proxy_is_killed(tmp_path: Path) -> None:
    proc, _port = start_serve("--demo", cwd=tmp_path)
    (demo,) = children(proc.pid)
    writer = writer_of(proc.pid)
    stop_serve(proc, signal.SIGKILL)
    assert ends_soon(demo), "its lifeline (stdin) closed with the proxy"
    assert ends_soon(writer), "the writer process ends when its socket to the proxy closes"


def test_demo_and_upstream_together_is_a_usage_error(tmp_path: Path) -> None:
    out = run_cli("serve", "--demo", "--upstream", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "--demo" in out.stderr


def test_make_serve_runs_the_demo_and_installs_runtime_dependencies_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROXY_UPSTREAM_URL"}
    plan = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "serve", f"VENV={tmp_path}/venv"], env=env, capture_output=True, text=True
    ).stdout
    assert "proxy serve --demo" in plan
    assert 'pip install -q -e ".[fast]"' in plan and "test" not in plan.replace(str(tmp_path), "")
    real = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "serve", f"VENV={tmp_path}/venv", "UPSTREAM=https://example.com/v1"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "proxy serve --upstream https://example.com/v1" in real
    tests = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "test", f"VENV={tmp_path}/venv"], capture_output=True, text=True
    )
    assert '".[test,fast]"' in tests.stdout


# ``proxy serve --demo`` whose user presses Ctrl-C while the demo child is being started (inside Popen).
INTERRUPTED_DEMO = """
import os, signal, subprocess, sys
from proxy import cli

real_init = subprocess.Popen.__init__


def init_then_ctrl_c(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)


subprocess.Popen.__init__ = init_then_ctrl_c
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_demo_upstream_starts_stops_it_quietly(tmp_path: Path) -> None:
    """A Ctrl-C inside Popen left the child running with its pipes closed: it then failed to print its port
    (a BrokenPipeError traceback on the proxy's stderr, which it shares). Now the child is stopped: 130."""
    (tmp_path / "interrupted_demo.py").write_text(INTERRUPTED_DEMO)
    out = subprocess.run(
        [PY, "-m", "interrupted_demo", "serve", "--demo", "--listen", "127.0.0.1:0"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (130, ""), out.stderr
