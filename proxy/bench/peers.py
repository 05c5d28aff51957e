"""Other proxies run through the same scenarios: nginx (the C floor), mitmproxy in reverse mode, LiteLLM.

Each is optional: ``find_peers`` returns the ones installed and a reason for each one that is not, and
the report prints those reasons. All run with recording off (their defaults) and their access logs off,
one process (or worker) each, so the comparison with a one-worker proxy is like for like.

Where they are looked for: ``PATH``, then the extra directories given with ``--peer-bin`` (for example a
separate virtualenv: ``python -m venv /opt/peers && /opt/peers/bin/pip install mitmproxy 'litellm[proxy]'``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from proxy.bench.loadgen import API_KEY
from proxy.bench.procs import Service, free_port

PEER_NAMES = ("nginx", "mitmproxy", "litellm")

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""

LITELLM_CONF = """\
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-upstream
litellm_settings:
  telemetry: false
  drop_params: true
"""


def _which(name: str, extra: Sequence[Path]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra:
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    return None


def _nginx(binary: str, upstream_port: int, work: Path) -> Service:
    d = work / "nginx"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "nginx.conf").write_text(NGINX_CONF.format(dir=d, port=port, upstream_port=upstream_port))
    cmd = [binary, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"]
    return Service("nginx", cmd, port, d)


def _mitmproxy(binary: str, upstream_port: int, work: Path) -> Service:
    d = work / "mitmproxy"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        binary,
        "--mode",
        f"reverse:http://127.0.0.1:{upstream_port}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--quiet",
        # Stream bodies instead of buffering them whole, so SSE events pass as they arrive.
        "--set",
        "stream_large_bodies=1",
        "--set",
        f"confdir={d}",
    ]
    return Service("mitmproxy", cmd, port, d)


def _litellm(binary: str, upstream_port: int, work: Path) -> Service:
    d = work / "litellm"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "config.yaml").write_text(LITELLM_CONF.format(upstream_port=upstream_port))
    cmd = [binary, "--config", str(d / "config.yaml"), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    # LiteLLM refuses to start without a master key; the load generator's key is it, so requests pass.
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "LITELLM_MASTER_KEY": API_KEY,
        # Its bundled price map, instead of fetching one from GitHub at every start (offline machines).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return Service("litellm", cmd, port, d, env=env)


def find_peers(
    wanted: Sequence[str], upstream_port: int, work: Path, extra_bin: Sequence[Path] = ()
) -> tuple[list[Service], dict[str, str]]:
    """The installed peers among ``wanted`` (not yet started), and why each missing one is skipped."""
    services: list[Service] = []
    skipped: dict[str, str] = {}
    makers = {
        "nginx": (("nginx",), _nginx, "nginx not found (apt-get install nginx-light)"),
        "mitmproxy": (("mitmdump",), _mitmproxy, "mitmdump not found (pip install mitmproxy, any venv + --peer-bin)"),
        "litellm": (("litellm",), _litellm, "litellm not found (pip install 'litellm[proxy]', any venv + --peer-bin)"),
    }
    for name in wanted:
        binaries, make, why = makers[name]
        binary = next((b for b in (_which(n, [*extra_bin, Path("/usr/sbin")]) for n in binaries) if b), None)
        if binary is None:
            skipped[name] = why
            continue
        services.append(make(binary, upstream_port, work))
    return services, skipped
