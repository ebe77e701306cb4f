"""Observability of the relay: its Prometheus metrics after known traffic, and its JSON logs.

A relay of the test's own (so the counts start at zero), the real Redis, the demo upstream."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from django.test import Client
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from billing.models import UsageEvent
from portal import worker_metrics

from .conftest import RelayProcess, publish_catalog, start_relay, wait_until
from .test_relay import chat, post

pytestmark = pytest.mark.usefixtures("catalog")

TOKEN = "metrics-token-for-tests"
MODEL = "mistral-large-2"


@pytest.fixture
def own_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path, TP_METRICS_TOKEN=TOKEN, TP_LOG_FORMAT="json")
    publish_catalog(process)
    yield process
    process.stop()


def origin(relay: RelayProcess) -> str:
    return relay.base_url.removesuffix("/v1")


def scrape(relay: RelayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    request = urllib.request.Request(f"{origin(relay)}/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def test_relay_metrics_count_known_traffic(own_relay: RelayProcess, alice_key: str) -> None:
    url = f"{own_relay.base_url}/chat/completions"
    for _ in range(3):
        status, _, _ = post(url, chat(MODEL), alice_key)
        assert status == 200
    status, _, body = post(url, chat(MODEL), alice_key, x_demo_error="500")
    assert status == 502, body
    client = openai.OpenAI(base_url=own_relay.base_url, api_key=alice_key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert chunks

    requests = "tp_relay_requests_total"
    # A request is counted as the relay lets it go: a stream's after its last chunk is written
    # and settled, which may be a moment after the client has read that chunk.
    wait_until(lambda: total(scrape(own_relay), requests) >= 5)
    samples = scrape(own_relay)
    assert total(samples, requests, model=MODEL, status="200") == 4  # 3 plain, 1 stream
    assert total(samples, requests, model=MODEL, status="502") == 1
    assert total(samples, requests) == 5
    answered = [dict(labels) for (name, labels), v in samples.items() if name == requests and v]
    assert all(labels["route"] for labels in answered if labels["status"] == "200")
    # Each route the failing request tried answered 500: one upstream error per attempt.
    errors = total(samples, "tp_relay_upstream_errors_total", kind="upstream_error")
    assert errors >= 1
    assert errors == total(samples, "tp_relay_upstream_errors_total")
    # Latencies: the four answers' upstream parts and the relay's own, one stream's first byte.
    assert total(samples, "tp_relay_added_latency_seconds_count") == 4
    assert 0 < total(samples, "tp_relay_added_latency_seconds_sum") < 4 * 0.5
    assert total(samples, "tp_relay_upstream_latency_seconds_count") >= 4
    assert total(samples, "tp_relay_stream_ttfb_seconds_count") == 1
    assert total(samples, "tp_relay_holds_outstanding") == 0
    assert total(samples, "tp_relay_spool_depth") == 0
    # The usage events leave in batches: published to the broker, none refused.
    wait_until(lambda: total(scrape(own_relay), "tp_relay_usage_batches_total") >= 1)
    samples = scrape(own_relay)
    assert total(samples, "tp_relay_usage_batches_total", result="failed") == 0


def test_relay_metrics_want_the_token(own_relay: RelayProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{origin(own_relay)}/metrics", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(f"{origin(own_relay)}/metrics")
    request.add_header("Authorization", "Bearer wrong")
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(request, timeout=10)
    assert wrong.value.code == 401


def test_relay_log_lines_are_json_with_the_request_id(
    own_relay: RelayProcess, alice_key: str
) -> None:
    url = f"{own_relay.base_url}/chat/completions"
    secret_words = "the secret prompt words"
    body = {"model": MODEL, "messages": [{"role": "user", "content": secret_words}]}
    status, headers, _ = post(url, body, alice_key, x_demo_error="500")
    assert status == 502
    request_id = headers["x-request-id"]

    def line() -> dict[str, Any] | None:
        for raw in own_relay.log_path.read_text().splitlines():
            if request_id in raw:
                return json.loads(raw)
        return None

    entry = wait_until(line)
    assert entry["request_id"] == request_id
    assert entry["logger"] == "relay"
    assert entry["level"] == "INFO"
    assert {"ts", "message"} <= entry.keys()
    log = own_relay.log_path.read_text()
    assert secret_words not in log
    # Every line of the relay's log is one JSON object (uvicorn's own lines too).
    for raw in log.splitlines():
        json.loads(raw)


def portal_scrape(client: Client, **headers: str) -> dict[Any, float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_portal_metrics_count_requests_and_are_kept_to_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client()
    before = total(portal_scrape(client), "tp_portal_requests_total", view="healthz")
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    samples = portal_scrape(client)
    assert total(samples, "tp_portal_requests_total", view="healthz", status="200") == before + 3
    assert total(samples, "tp_portal_request_duration_seconds_count", view="healthz") >= 3
    # From elsewhere: refused, unless the scraper is a trusted peer or brings the token.
    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    assert elsewhere.get("/metrics").status_code == 403
    monkeypatch.setenv("TP_METRICS_TOKEN", TOKEN)
    assert elsewhere.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert portal_scrape(elsewhere, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    monkeypatch.setenv("TP_TRUSTED_PROXIES", "203.0.113.0/24")
    assert portal_scrape(elsewhere)


def test_portal_responses_carry_the_request_id() -> None:
    client = Client()
    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-1234").headers["X-Request-ID"] == "lb-1234"
    made = client.get("/healthz", HTTP_X_REQUEST_ID="bad\nid").headers["X-Request-ID"]
    assert made.startswith("req_") and "\n" not in made


def test_worker_metrics_count_recorded_usage(
    relay: RelayProcess, worker: Any, alice_key: str, settings: Any
) -> None:
    publish_catalog(relay)
    task = "billing.record_usage"
    before = total(scrape_registry(), "tp_worker_tasks_total", task=task, outcome="success")
    status, headers, _ = post(f"{relay.base_url}/chat/completions", chat(MODEL), alice_key)
    assert status == 200
    wait_until(lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).exists())
    wait_until(
        lambda: (
            total(scrape_registry(), "tp_worker_tasks_total", task=task, outcome="success") > before
        )
    )
    samples = scrape_registry()
    assert total(samples, "tp_worker_task_duration_seconds_count", task=task) >= 1
    # The queue's depth, read from the broker at each scrape: drained by the worker.
    depth = worker_metrics.QueueDepth(settings.CELERY_BROKER_URL)
    wait_until(lambda: [m.samples[0].value for m in depth.collect()] == [0])


def scrape_registry() -> dict[Any, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
    }
