"""The admin HTTP API and dashboard under ``/_proxy/``, over the same query layer as the CLI.

Invariants:
- Only ``/_proxy/health`` is open. Every data route needs ``Authorization: Bearer <admin_token>``
  (compared in constant time) when a token is configured; with no token it is open only while the proxy
  listens on a loopback address, and answers 403 otherwise. The dashboard's static files (no data) follow
  only the second rule. Refusals use the OpenAI error shape.
- These routes live outside the ``/v1/`` mounts: nothing a client sends through the forwarder reaches them,
  and the forwarder never sees an admin request.
- Read-only: the API never writes to the database. ``/_proxy/metrics`` does no database read at all.
- The dashboard is static files from ``proxy/admin/static`` (Chart.js vendored there, no CDN); its data comes
  from the JSON routes here, with the token the user gives it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.views import encode, exchange_detail, filters_from
from proxy.config import Settings
from proxy.errors import error_response
from proxy.record.recorder import Recorder
from proxy.store import browse, db, queries
from proxy.store.filters import QueryError
from proxy.usage.metrics import CONTENT_TYPE, Metrics

STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class AdminState:
    settings: Settings
    engine: AsyncEngine
    recorder: Recorder
    metrics: Metrics


ADMIN = web.AppKey("admin", AdminState)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(payload), content_type="application/json")


def _refusal(settings: Settings, request: web.Request, *, page: bool = False) -> web.Response | None:
    token = settings.admin_token
    if token and page:
        return None  # the dashboard's files hold no data; the page asks for the token and sends it
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return error_response(
            401,
            "admin token required: send 'Authorization: Bearer <admin_token>'",
            "authentication_error",
            "admin_token_required",
        )
    if settings.listens_on_loopback:
        return None
    return error_response(
        403,
        f"the admin API is disabled: the proxy listens on {settings.listen}, which is not a loopback address, "
        "and no admin_token is configured (set admin_token or PROXY_ADMIN_TOKEN)",
        "permission_error",
        "admin_disabled",
    )


def guarded(handler: Handler, *, page: bool = False) -> Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        refusal = _refusal(request.app[ADMIN].settings, request, page=page)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except QueryError as exc:
            return error_response(400, str(exc), "invalid_request_error", "invalid_parameter")

    return wrapper


def _int(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name, "")
    if not value:
        return default
    if not value.isdigit():
        raise QueryError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


async def health(request: web.Request) -> web.Response:
    st = request.app[ADMIN]
    stats = st.recorder.stats
    ok = stats.database_ok
    payload = {
        "status": "ok" if ok else "degraded",
        "mode": str(st.settings.mode),
        "database": {"ok": ok, "url": db.redacted_url(st.settings.database.url), "error": stats.last_error},
        "recorder": {
            "queue_depth": st.recorder.queue_depth,
            "queue_bytes": st.recorder.intake.bytes,
            "max_queue_depth": st.recorder.intake.max_depth,
            # From an exchange's end to its commit, over the last records written.
            "lag_ms": st.recorder.lag_ms(),
            "last_batch_ms": round(stats.last_batch_ms, 1),
            "written": stats.written,
            "spooled": stats.spooled,
            "unspooled": stats.unspooled,
            "dropped": stats.dropped,
            "quarantined": stats.quarantined,
            "overflowed": stats.overflowed,
            "spool_files": len(st.recorder.spool_files()) if not ok else 0,
        },
        # Where the writer runs (a process: its pid); it is restarted should it ever die: how often, why.
        "writer": {
            "mode": str(st.recorder.mode),
            "pid": st.recorder.process.pid if st.recorder.process is not None else None,
            "restarts": stats.writer_restarts,
            "thread_restarts": stats.thread_restarts,
            "last_error": stats.writer_error,
        },
    }
    return _json(payload)


async def usage(request: web.Request) -> web.Response:
    dims = queries.parse_dimensions(request.query.get("by"))
    filters = filters_from(request.query)
    async with request.app[ADMIN].engine.connect() as conn:
        return _json(await queries.usage(conn, dims, filters))


async def sessions(request: web.Request) -> web.Response:
    filters = filters_from(request.query)
    async with request.app[ADMIN].engine.connect() as conn:
        return _json(await browse.sessions(conn, filters, limit=_int(request, "limit", 100)))


async def session(request: web.Request) -> web.Response:
    async with request.app[ADMIN].engine.connect() as conn:
        detail = await browse.session_detail(conn, request.match_info["id"])
    if detail is None:
        return error_response(404, "no session with that id", "invalid_request_error", "session_not_found")
    return _json(detail)


async def exchanges(request: web.Request) -> web.Response:
    """Keyset pages (``before``/``after`` a cursor from ``older``/``newer``); ``offset`` still works."""
    filters = filters_from(request.query)
    limit = _int(request, "limit", 50)
    async with request.app[ADMIN].engine.connect() as conn:
        if "offset" in request.query:
            page = await browse.list_exchanges(conn, filters, limit=limit, offset=_int(request, "offset", 0))
            return _json({"data": page.rows, "limit": page.limit, "offset": page.offset, "has_more": page.has_more})
        keyset = await browse.page_exchanges(
            conn, filters, limit=limit, before=request.query.get("before"), after=request.query.get("after")
        )
    return _json(keyset_json(keyset))


def keyset_json(page: browse.KeysetPage) -> dict[str, object]:
    return {
        "data": page.rows,
        "limit": page.limit,
        "has_more": page.older is not None,
        "older": page.older,
        "newer": page.newer,
    }


async def models(request: web.Request) -> web.Response:
    async with request.app[ADMIN].engine.connect() as conn:
        return _json(await browse.models(conn))


async def exchange(request: web.Request) -> web.Response:
    async with request.app[ADMIN].engine.connect() as conn:
        row = await browse.get_exchange(conn, request.match_info["id"])
    if row is None:
        return error_response(404, "no exchange with that id", "invalid_request_error", "exchange_not_found")
    return _json(exchange_detail(row, raw=request.query.get("raw") in ("1", "true")))


async def metrics(request: web.Request) -> web.Response:
    body = request.app[ADMIN].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        return error_response(404, "not found", "invalid_request_error", "not_found")
    return web.FileResponse(path, headers={"Content-Type": STATIC_TYPES[path.suffix], "Cache-Control": "no-cache"})


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/_proxy/dashboard")


def register(app: web.Application) -> None:
    """Add the admin routes; ``app[ADMIN]`` is set by the server's start-up."""
    add = app.router.add_get
    add("/_proxy/health", health)
    add("/_proxy/usage", guarded(usage))
    add("/_proxy/sessions", guarded(sessions))
    add("/_proxy/sessions/{id:.+}", guarded(session))  # header-given ids may hold a slash
    add("/_proxy/models", guarded(models))
    add("/_proxy/exchanges", guarded(exchanges))
    add("/_proxy/exchanges/{id}", guarded(exchange))
    add("/_proxy/metrics", guarded(metrics))
    add("/_proxy/dashboard", guarded(dashboard, page=True))
    add("/_proxy/static/{name}", guarded(static, page=True))
    add("/_proxy/", guarded(root, page=True))
