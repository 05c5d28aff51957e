"""Smoke test of the benchmark harness in its quickest mode: it runs end to end on each database, writes
JSON and Markdown with the expected fields, and every record the proxy should have made is there with
the tokens the upstream reported. No timing is asserted: on a shared machine timings are not facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import BACKENDS, PG_URL

SQLITE_SCENARIOS = ("nonstream-c1", "fast-streams-c32")
# PostgreSQL: the streamed scenario only (the one with the most records and tokens), to keep this quick.
PG_SCENARIOS = ("fast-streams-c32",)


def _check_scenario_summary(targets: dict[str, Any]) -> None:
    """One scenario's summary: each target ran, the proxy served every request and recorded each with its tokens."""
    assert list(targets) == ["direct", "proxy", "direct-again"]
    proxy = targets["proxy"]
    assert proxy["failed"] == 0 and proxy["rps"] > 0 and proxy["cpu_ms_per_request"] is not None
    assert proxy["peak_rss_mb"] > 0 and proxy["x_direct"] is not None
    records = proxy["records"]
    assert records["complete"] and records["lost"] == 0
    assert records["rows"] == records["requests_sent"] > 0
    assert records["tokens_db"] == records["tokens_upstream"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_quick_run_writes_complete_report(backend: str, tmp_path: Path) -> None:
    db = "sqlite" if backend == "sqlite" else PG_URL
    assert db
    scenarios = SQLITE_SCENARIOS if backend == "sqlite" else PG_SCENARIOS
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    cmd = [
        sys.executable,
        "-m",
        "proxy.bench",
        "--quick",
        "--duration",
        "0.4",
        "--scenarios",
        ",".join(scenarios),
        "--db",
        db,
        "--write-rate-n",
        "20",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    assert set(report) >= {"meta", "options", "scenarios", "sections", "targets", "skipped_peers"}
    assert report["meta"]["cores"] and len(report["meta"]["load_before"]) == 3 and report["meta"]["command"]
    (section,) = report["sections"]
    assert section["database"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert set(section["summary"]) == set(scenarios)

    for scenario in scenarios:
        _check_scenario_summary(section["summary"][scenario])
    stream = section["summary"]["fast-streams-c32"]["proxy"]
    assert stream["ttfe_p50_ms"] is not None and stream["events_per_s"] > 0
    # Inside the proxy: CPU split by thread kind (adding up to the whole), and the loop's longest hold.
    assert stream["serving_cpu_ms"] > 0 and stream["recording_cpu_ms"] is not None
    assert abs(stream["serving_cpu_ms"] + stream["recording_cpu_ms"] - stream["cpu_ms_per_request"]) < 0.05
    assert stream["loop_stall_cpu_ms"] is not None and stream["loop_stall_wall_ms"] is not None

    rounds = [r for r in section["rounds"] if r["target"] == "proxy"]
    assert len(rounds) == len(scenarios)
    for r in rounds:
        # Each round's rows match what its load generator sent, warm-up included.
        assert r["records"]["requests_sent"] == r["load"]["sent"] + r["load"]["warmup_sent"] == r["records"]["rows"]

    rates = section["write_rate"]
    for key in ("insert_nonstream_1w", "insert_nonstream_2w", "insert_stream50_1w", "recorder_stream50"):
        assert rates[key]["per_s"] > 0 and rates[key]["rows_ok"], key

    lost = next(t for t in report["targets"] if t["target"].startswith("lost records"))
    assert lost["pass"] is True and lost["value"] == 0
    markdown = (tmp_path / "latest.md").read_text()
    assert "| proxy |" in markdown and "Database write rate" in markdown and "Inside our proxy" in markdown
