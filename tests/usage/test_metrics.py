"""Prometheus metrics after real traffic."""

from __future__ import annotations

from tests.support import Proxy
from tests.support.traffic import admin_get, mixed_traffic


async def test_metrics_after_traffic(proxy: Proxy) -> None:
    await mixed_traffic(proxy)
    status, _, text = await admin_get(proxy, "/_proxy/metrics")
    assert status == 200
    assert 'proxy_requests_total{model="fake-model",status="200",upstream="default"} 1.0' in text
    assert 'proxy_tokens_total{kind="reasoning",model="fake-reasoning",upstream="default"} 3.0' in text
    assert 'proxy_cost_usd_total{model="fake-openrouter",upstream="default"}' in text
    assert "proxy_time_to_first_token_seconds_bucket" in text and "proxy_request_duration_seconds_count" in text
    assert "proxy_recorder_queue_depth 0.0" in text and "proxy_recorder_written_total 4.0" in text
    assert "proxy_recorder_batch_seconds_count" in text and "proxy_recorder_dropped_total 0.0" in text
