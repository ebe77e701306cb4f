"""Each route's live figures from our own traffic: usage batches rolled up per route and hour in
the transaction that records them, read back per window (hour, day, week) with "not enough
data" below the threshold, uptime honest about failed attempts and failovers, and the figures
published by beat's task for the relay's ``/v1/models/{id}/endpoints``."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
from django.template.loader import render_to_string

from billing import routestats
from billing.usage import record_batch
from catalog import figures
from catalog.figures import MIN_REQUESTS, route_figures
from catalog.models import Model, RouteHour
from catalog.tasks import publish_route_figures
from core import state
from simulators.llm import start_in_thread

from .conftest import publish_catalog, wait_until
from .test_relay import chat, post
from .test_relay_limits import key_with, route_model

pytestmark = pytest.mark.usefixtures("catalog")

MODEL = "mistral-small"
HOUR = 3600.0


class Traffic:
    """Usage events as the relay sends them, for one of alice's keys."""

    def __init__(self, alice: Any) -> None:
        self.account = alice.account.pk
        self.key = alice.account.api_keys.first().pk
        self.count = 0

    def event(
        self,
        *,
        provider: str = "mistral",
        status: str = "ok",
        ago: float = 60.0,
        streamed: bool = True,
        ttfb_ms: int | None = 300,
        duration_ms: int = 1300,
        completion_tokens: int = 100,
        attempts: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        self.count += 1
        return {
            "request_id": f"req_figures_{self.count}_{time.time_ns()}",
            "account": self.account,
            "key": self.key,
            "model": MODEL,
            "provider": provider,
            "upstream_model": "mistral-small-latest",
            "prompt_tokens": 10,
            "completion_tokens": completion_tokens,
            "cached_tokens": 0,
            "cost": "0",
            "hold": "0.01",
            "price_version": 1,
            "estimated": False,
            "status": status,
            "http_status": 200 if status == "ok" else 502,
            "streamed": streamed,
            "started_at": time.time() - ago,
            "duration_ms": duration_ms,
            "ttfb_ms": ttfb_ms,
            "client_net": "",
            "attempts": attempts or [],
        }

    def failed(self, *attempts: list[str], ago: float = 60.0) -> dict[str, Any]:
        self.count += 1
        return {
            "kind": "failed",
            "request_id": f"req_failed_{self.count}_{time.time_ns()}",
            "model": MODEL,
            "started_at": time.time() - ago,
            "attempts": list(attempts),
        }


@pytest.fixture
def traffic(alice: Any, alice_key: str) -> Traffic:
    return Traffic(alice)


def mistral_figures() -> figures.RouteFigures:
    (route,) = [
        r for r in route_figures(Model.objects.get(id=MODEL)) if r.provider_slug == "mistral"
    ]
    return route


def test_it_rolls_usage_up_per_route_and_hour_once(traffic: Traffic) -> None:
    batch = [traffic.event() for _ in range(12)]
    assert record_batch(batch) == 12
    assert record_batch(batch) == 0  # redelivered: nothing counts twice
    (row,) = RouteHour.objects.filter(model_id=MODEL)
    assert (row.provider, row.requests, row.errors, row.upstream_errors) == ("mistral", 12, 0, 0)
    assert row.hour.minute == 0 and sum(row.ttfb) == 12 and sum(row.tps) == 12

    hour = mistral_figures().window("hour")
    assert hour.enough and hour.requests == 12
    # 300 ms to the first token, 100 tokens in the following second: medians within their
    # buckets, (200, 300] ms and (75, 100] tokens per second.
    assert hour.p50_ttfb_ms is not None and 200 < hour.p50_ttfb_ms <= 300
    assert hour.p50_tps is not None and 75 < hour.p50_tps <= 100
    assert (hour.uptime, hour.error_rate) == (100.0, 0.0)


def test_below_the_threshold_there_is_not_enough_data(traffic: Traffic) -> None:
    record_batch([traffic.event() for _ in range(MIN_REQUESTS - 1)])
    route = mistral_figures()
    hour = route.window("hour")
    assert hour.requests == MIN_REQUESTS - 1 and not hour.enough
    assert (hour.p50_ttfb_ms, hour.p50_tps, hour.uptime, hour.error_rate) == (None,) * 4
    html = render_to_string("catalog/partials/route_figures.html", {"route_figures": [route]})
    assert "<caption>Routes</caption>" in html
    assert html.count("not enough data") == 3  # hour, day and week

    record_batch([traffic.event()])
    html = render_to_string(
        "catalog/partials/route_figures.html", {"route_figures": [mistral_figures()]}
    )
    assert "100.00%" in html and html.count("not enough data") == 0


def test_each_window_counts_its_own_hours(traffic: Traffic) -> None:
    record_batch(
        [traffic.event(ago=60) for _ in range(10)]
        + [traffic.event(ago=5 * HOUR) for _ in range(10)]
        + [traffic.event(ago=3 * 24 * HOUR) for _ in range(10)]
        + [traffic.event(ago=9 * 24 * HOUR) for _ in range(10)]  # past the week
    )
    route = mistral_figures()
    assert [w.requests for w in route.windows] == [10, 20, 30]
    assert [w.name for w in route.windows] == ["hour", "day", "week"]
    assert figures.prune() == 1
    assert RouteHour.objects.filter(model_id=MODEL).count() == 3


def test_uptime_counts_only_what_the_upstream_failed(traffic: Traffic) -> None:
    record_batch(
        [traffic.event() for _ in range(14)]
        # A stream the upstream cut off: against uptime.
        + [traffic.event(status="upstream_cut")]
        # The client hung up: neither an error nor a failure of the route.
        + [traffic.event(status="client_closed", ttfb_ms=None, completion_tokens=0)]
        # Served here after another route failed: the failure counts there, not here.
        + [traffic.event(attempts=[["backup", "m", "upstream_error"]])]
        # No route served these: a 5xx (against uptime), a refused request and a 429 (not).
        + [
            traffic.failed(["mistral", "m", "upstream_error"]),
            traffic.failed(["mistral", "m", "client_error"]),
            traffic.failed(["mistral", "m", "rate_limited"]),
        ]
    )
    (mistral,) = RouteHour.objects.filter(model_id=MODEL, provider="mistral")
    assert (mistral.requests, mistral.errors, mistral.upstream_errors) == (20, 4, 2)
    (backup,) = RouteHour.objects.filter(model_id=MODEL, provider="backup")
    assert (backup.requests, backup.errors, backup.upstream_errors) == (1, 1, 1)
    hour = mistral_figures().window("hour")
    assert (hour.uptime, hour.error_rate) == (90.0, 20.0)


@pytest.fixture
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {"broken": start_in_thread(error="503"), "good": start_in_thread()}
    yield servers
    for server in servers.values():
        server.stop()


def test_a_failover_counts_against_the_route_that_failed(
    relay: Any, alice: Any, upstreams: dict[str, Any], worker: Any
) -> None:
    route_model(
        relay,
        MODEL,
        ("broken", upstreams["broken"].base_url, 0),
        ("good", upstreams["good"].base_url, 1),
    )
    secret = key_with(alice)
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
    assert status == 200, body

    def counted() -> dict[str, tuple[int, int]]:
        rows = RouteHour.objects.filter(model_id=MODEL)
        return {r.provider: (r.requests, r.upstream_errors) for r in rows}

    wait_until(lambda: counted() == {"broken": (1, 1), "good": (1, 0)}, timeout=15)

    # Every route failing: no usage row (it costs nothing), and still counted.
    route_model(relay, MODEL, ("broken", upstreams["broken"].base_url, 0))
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
    assert status == 502, body
    wait_until(lambda: counted() == {"broken": (2, 2), "good": (1, 0)}, timeout=15)


def test_beat_publishes_the_figures_the_relay_serves(
    relay: Any, traffic: Traffic, redis_client: Any
) -> None:
    publish_catalog(relay)
    record_batch([traffic.event() for _ in range(19)] + [traffic.event(status="upstream_cut")])
    assert publish_route_figures() >= 1
    published = json.loads(redis_client.hget(state.ROUTE_FIGURES, MODEL))
    assert [r["provider"] for r in published] == ["mistral"]

    url = f"{relay.base_url}/models/{MODEL}/endpoints"
    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.loads(response.read())["data"]
    assert data["id"] == MODEL
    (endpoint,) = data["endpoints"]
    assert endpoint["tag"] == "mistral" and endpoint["provider_name"] == "Mistral AI"
    assert endpoint["uptime_last_1h"] == 95.0
    assert 200 < endpoint["latency_last_1h"]["p50"] <= 300
    assert 75 < endpoint["throughput_last_1h"]["p50"] <= 100
    assert endpoint["stats"]["day"]["requests"] == 20
    assert endpoint["stats"]["week"]["error_rate"] == 5.0


def test_streamed_traffic_through_the_relay_shows_on_its_endpoints(
    relay: Any, alice_key: str, worker: Any
) -> None:
    publish_catalog(relay)
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key)
    for _ in range(MIN_REQUESTS):
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
            # Without a delay the simulator sends the whole stream in one write: its tokens
            # arrive within the millisecond of the first, a rate the relay does not count
            # (integer milliseconds), and on a fast machine none of these streams had one.
            extra_headers={"x-demo-chunk-delay-ms": "2"},
        )
        assert any(chunk.usage for chunk in stream)

    def rolled_up() -> int:
        return sum(RouteHour.objects.filter(model_id="gpt-4o").values_list("requests", flat=True))

    wait_until(lambda: rolled_up() == MIN_REQUESTS, timeout=15)
    publish_route_figures()
    with urllib.request.urlopen(f"{relay.base_url}/models/gpt-4o/endpoints", timeout=10) as r:
        (endpoint,) = json.loads(r.read())["data"]["endpoints"]
    assert endpoint["uptime_last_1h"] == 100.0
    assert endpoint["latency_last_1h"]["p50"] >= 0
    assert endpoint["throughput_last_1h"]["p50"] > 0
    assert endpoint["stats"]["hour"]["requests"] == MIN_REQUESTS


def test_a_catalog_redis_lost_is_served_meanwhile_and_published_again(
    relay: Any, redis_client: Any
) -> None:
    """Redis losing the catalog (a master restarted without persistence, a flush) does not
    empty a running relay's: it serves the one it loaded, and beat's minute task publishes it
    again for relays that start."""
    publish_catalog(relay)
    redis_client.delete(state.CATALOG)
    redis_client.publish(state.EVICT_CHANNEL, "catalog")  # as any reload would
    time.sleep(0.5)
    with urllib.request.urlopen(f"{relay.base_url}/models/{MODEL}", timeout=10) as response:
        assert json.loads(response.read())["id"] == MODEL
    with urllib.request.urlopen(relay.base_url.removesuffix("/v1") + "/readyz", timeout=10) as r:
        assert json.loads(r.read())["checks"]["catalog"] is True

    publish_route_figures()
    assert MODEL in json.loads(redis_client.get(state.CATALOG))["models"]


@pytest.mark.parametrize(
    "started_at",
    [1_764_720_000.0, 1_764_720_000.000001, 1_764_723_599.999999, 1_764_723_600.0, 86_399.5],
)
def test_a_request_counts_in_the_utc_hour_it_started_in(started_at: float) -> None:
    """The worker floors an event's start to its hour from the epoch seconds (a cached
    ``routestats._hour``): the same hour as flooring the datetime."""
    expected = figures.hour_of(datetime.fromtimestamp(started_at, tz=UTC))
    assert routestats._hour(int(started_at // 3600)) == expected
