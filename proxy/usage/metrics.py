"""Prometheus metrics, fed by the recorder after each batch is written; nothing here runs per request.

Invariants:
- The request path does no metrics work at all: counters and histograms are updated in the recorder's
  ``on_written`` callback (O(1) per exchange, after the client has its answer and the row is stored),
  on the recorder's writer thread: prometheus_client's metrics lock themselves, and this class's own
  memo (``_models``, ``_children``, ``_batches_seen``) is touched by that one thread only,
  and recorder state (queue depth, written, spooled, dropped, database up) is read at scrape time.
- Each app has its own registry, so several proxies (tests) in one process never collide.
- Label values are bounded: at most ``MAX_MODELS`` model names (a client can send any string as a model),
  the rest are counted under ``other``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.record.exchange import Exchange, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODELS = 200
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
UPSTREAM_FAILURES = frozenset(
    {Outcome.UPSTREAM_CUT, Outcome.UPSTREAM_ERROR_EVENT, Outcome.UPSTREAM_UNREACHABLE, Outcome.UPSTREAM_TIMEOUT}
)


class WriterStats(Protocol):
    """The recorder's counters, as metrics reads them (``proxy.record.recorder.RecorderStats``)."""

    written: int
    spooled: int
    unspooled: int
    dropped: int
    quarantined: int
    overflowed: int
    writer_restarts: int
    thread_restarts: int
    database_ok: bool


class Recorder(Protocol):
    """What metrics reads of the recorder; a protocol, so usage/ does not import record/ (which prices)."""

    @property
    def stats(self) -> WriterStats: ...

    @property
    def queue_depth(self) -> int: ...


class RecorderCollector(Collector):
    """Reads the recorder's state when Prometheus scrapes."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.recorder.stats
        yield GaugeMetricFamily(
            "proxy_recorder_queue_depth", "Exchanges waiting for the writer", value=self.recorder.queue_depth
        )
        yield GaugeMetricFamily("proxy_database_up", "1 when the last write succeeded", value=int(stats.database_ok))
        for name, value, doc in (
            ("written", stats.written, "Exchanges written to the database"),
            ("spooled", stats.spooled, "Exchanges written to the disk spool while the database was down"),
            ("unspooled", stats.unspooled, "Spooled exchanges written back to the database"),
            ("dropped", stats.dropped, "Exchanges lost (queue or spool full)"),
            ("quarantined", stats.quarantined, "Exchanges the database refused, kept in quarantine files"),
            ("overflowed", stats.overflowed, "Exchanges past the queue's bounds, spooled instead"),
            ("writer_restarts", stats.writer_restarts, "Times the writer died and was restarted"),
            ("thread_restarts", stats.thread_restarts, "Times the writer's thread or process died and was restarted"),
        ):
            yield CounterMetricFamily(f"proxy_recorder_{name}", doc, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["model", "upstream"]
        self.requests = Counter("proxy_requests", "Recorded exchanges", [*labels, "status"], registry=r)
        self.tokens = Counter("proxy_tokens", "Provider-reported tokens", [*labels, "kind"], registry=r)
        self.cost = Counter("proxy_cost_usd", "Known cost in USD", labels, registry=r)
        self.unknown_cost = Counter("proxy_unknown_cost", "Exchanges whose cost is unknown", labels, registry=r)
        self.upstream_errors = Counter(
            "proxy_upstream_errors", "Upstream failures (cut, error event, unreachable, timeout, 5xx)",
            ["upstream", "kind"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "proxy_request_duration_seconds", "Time from request to the end of the response", labels,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "proxy_time_to_first_token_seconds", "Time to the first output token of a stream", labels,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "proxy_recorder_batch_seconds", "Database write time per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self._models: set[str] = set()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._recorder: Recorder | None = None
        self._batches_seen = 0

    def bind(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.registry.register(RecorderCollector(recorder))

    def _model(self, ex: Exchange) -> str:
        name = ex.returned_model or ex.requested_model or ""
        if name in self._models or len(self._models) < MAX_MODELS:
            self._models.add(name)
            return name
        return "other"

    def observe_batch(self, batch: list[Exchange]) -> None:
        """The recorder's ``on_written`` callback."""
        rec = self._recorder
        if rec is not None and rec.stats.batches != self._batches_seen:
            self._batches_seen = rec.stats.batches
            self.batch.observe(rec.stats.last_batch_ms / 1000)
        for ex in batch:
            self.observe(ex)

    def observe(self, ex: Exchange) -> None:
        model, upstream = self._model(ex), ex.upstream
        self._child(self.requests, model, upstream, str(ex.status or 0)).inc()
        usage = ex.usage
        for kind, value in (
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("cached", usage.cached_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value:
                self._child(self.tokens, model, upstream, kind).inc(value)
        if ex.cost_usd is not None:
            self._child(self.cost, model, upstream).inc(ex.cost_usd)
        elif ex.cost_source == "unknown":
            self._child(self.unknown_cost, model, upstream).inc()
        if ex.outcome in UPSTREAM_FAILURES:
            self._child(self.upstream_errors, upstream, str(ex.outcome)).inc()
        elif ex.upstream_status is not None and ex.upstream_status >= 500:
            self._child(self.upstream_errors, upstream, f"http_{ex.upstream_status}").inc()
        if ex.duration_ms is not None:
            self._child(self.latency, model, upstream).observe(ex.duration_ms / 1000)
        if ex.ttft_ms is not None:
            self._child(self.ttft, model, upstream).observe(ex.ttft_ms / 1000)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, memoised: label values are bounded, and ``labels`` costs microseconds."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
