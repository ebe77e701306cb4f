"""Route health: a circuit breaker per route, shared by every relay through Redis. A route whose
upstream keeps failing is skipped without a connection until its cool-down is over; then one
request at a time probes it, and a healthy answer closes it again. The transitions themselves
are checked on the Lua script, with the clock in the test's hands."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.template.loader import render_to_string
from django.test import Client

from catalog import health
from catalog.figures import route_figures
from catalog.models import Model, PriceVersion, Provider, Route
from core import state
from simulators.llm import start_in_thread

from .conftest import RelayProcess, free_port, publish_catalog, start_relay, wait_until
from .test_relay import chat, post
from .test_relay_limits import key_with, route_model, stats

MODEL = "mistral-small"

# The script's thresholds: 3 failures in a row, or >= 50% of >= 6 requests in 60 s; cool-down
# 30 s, doubled on each failed probe up to 100 s.
RULES = [3, 60_000, 6, 50, 30_000, 100_000]


class Script:
    """The breaker's Lua script on one route, at a clock the test sets."""

    def __init__(self, redis_client: Any) -> None:
        self.redis = redis_client
        self.script = redis_client.register_script(state.BREAKER)
        self.route = f"unit-{time.time_ns()}|p|m"
        self.now = 1_000_000_000_000

    def __call__(self, ok: int = 0, failed: int = 0, probe: bool = False) -> list[int]:
        keys = [state.BREAKERS, state.BREAKERS_OPEN, state.breaker_probe(self.route)]
        args = [self.route, ok, failed, self.now, 1 if probe else 0, *RULES]
        return [int(v) for v in self.script(keys=keys, args=args)]

    def stored(self) -> dict[str, Any]:
        raw = self.redis.hget(state.BREAKERS, self.route)
        return json.loads(raw) if raw else {}


@pytest.fixture
def script(redis_client: Any) -> Iterator[Script]:
    s = Script(redis_client)
    yield s
    redis_client.hdel(state.BREAKERS, s.route)
    redis_client.hdel(state.BREAKERS_OPEN, s.route)


def test_consecutive_failures_open_it_and_a_success_resets_the_count(script: Script) -> None:
    assert script(failed=1) == [0, 0, 1]
    assert script(failed=1) == [0, 0, 2]
    assert script(ok=1) == [0, 0, 0]
    assert script(failed=1)[:2] == [0, 0]
    assert script(failed=1)[:2] == [0, 0]
    assert script(failed=1) == [1, script.now + 30_000, 3]
    assert script.redis.hget(state.BREAKERS_OPEN, script.route) == f"{script.now + 30_000}|3"


def test_an_error_rate_over_the_window_opens_it(script: Script) -> None:
    # Never 3 in a row, but half of 6 requests in the window.
    assert script(ok=2)[0] == 0
    assert script(failed=2)[0] == 0
    assert script(ok=1)[0] == 0
    assert script(failed=1) == [1, script.now + 30_000, 1]  # 3 of 6


def test_a_new_window_forgets_the_old_ones_requests(script: Script) -> None:
    script(ok=3)
    script(failed=2)
    script.now += 60_000
    assert script(ok=1)[0] == 0
    assert script.stored()["n"] == 1 and script.stored()["e"] == 0


def test_while_open_only_the_probe_counts(script: Script) -> None:
    script(failed=3)
    until = script.now + 30_000
    # Outcomes of requests sent before it opened, or successes flushed late: no change.
    assert script(ok=5) == [1, until, 3]
    assert script(failed=1) == [1, until, 3]
    # A failed probe re-opens it for twice the cool-down, then four times, capped at 100 s.
    script.now = until
    script.redis.set(state.breaker_probe(script.route), "1")
    assert script(failed=1, probe=True) == [1, script.now + 60_000, 4]
    assert not script.redis.exists(state.breaker_probe(script.route))  # the lease is given back
    assert script(failed=1, probe=True)[1] == script.now + 100_000
    assert script(failed=1, probe=True)[1] == script.now + 100_000
    # A successful probe closes it and forgets it.
    assert script(ok=1, probe=True) == [0, 0, 0]
    assert script.stored() == {}
    assert script.redis.hget(state.BREAKERS_OPEN, script.route) is None


def test_the_health_text_reads_the_stored_state() -> None:
    now = 1_000_000.0
    assert health.parse(None, now).text == "closed"
    closed = json.dumps({"f": 2, "u": 0})
    assert health.parse(closed, now).text == "closed, 2 failures in a row"
    opened = json.dumps({"f": 5, "u": int((now + 30) * 1000)})
    assert health.parse(opened, now).state == health.OPEN
    assert health.parse(opened, now).text.startswith("open until ")
    assert health.parse(opened, now + 31).text == "half-open, 5 failures in a row"


# ---- through real relays ----------------------------------------------------------------------


class Routes:
    """mistral-small with a first route that fails (``down``) and a second that answers."""

    def __init__(self, good: Any) -> None:
        self.good = good
        self.port = free_port()
        self.upstream_model = Model.objects.get(id=MODEL).upstream_model
        self.down = state.route_id(MODEL, "breaker-down", self.upstream_model)
        self.up = state.route_id(MODEL, "breaker-up", self.upstream_model)

    def clear(self, redis_client: Any) -> None:
        for route in (self.down, self.up):
            redis_client.hdel(state.BREAKERS, route)
            redis_client.hdel(state.BREAKERS_OPEN, route)
            redis_client.delete(state.breaker_probe(route))

    def publish(self, relay: RelayProcess, first_url: str | None = None) -> None:
        route_model(
            relay,
            MODEL,
            ("breaker-down", first_url or f"http://127.0.0.1:{self.port}/v1", 0),
            ("breaker-up", self.good.base_url, 1),
        )


@pytest.fixture
def routes(catalog: None, redis_client: Any) -> Iterator[Routes]:
    good = start_in_thread()
    r = Routes(good)
    r.clear(redis_client)
    yield r
    r.clear(redis_client)
    good.stop()


def start(tmp_path: Path, **env: str) -> RelayProcess:
    return start_relay(
        tmp_path,
        TP_BREAKER_FAILURES="3",
        TP_BREAKER_REFRESH="0.2",
        TP_UPSTREAM_CONNECT_TIMEOUT="2",
        **env,
    )


def served(relay: RelayProcess, secret: str) -> None:
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
    assert status == 200, body


def is_open(redis_client: Any, route: str) -> bool:
    return redis_client.hget(state.BREAKERS_OPEN, route) is not None


def test_a_failing_route_opens_and_is_skipped_by_every_relay(
    tmp_path: Path, routes: Routes, alice: Any, redis_client: Any
) -> None:
    broken = start_in_thread(error="500")
    one, two = start(tmp_path), start(tmp_path)
    try:
        routes.publish(one, broken.base_url)
        publish_catalog(two)  # (published again, to know the second relay has the routes)
        secret = key_with(alice)
        for _ in range(3):
            served(one, secret)  # failed over to the good route each time
        assert stats(broken)["requests"] == 3
        assert is_open(redis_client, routes.down)

        # The relay that saw it fail skips it at once; the other within its poll.
        served(one, secret)
        assert stats(broken)["requests"] == 3

        def two_skips() -> bool:
            before = stats(broken)["requests"]
            served(two, secret)
            return stats(broken)["requests"] == before

        wait_until(two_skips, timeout=5)
        for _ in range(5):
            served(two, secret)
            served(one, secret)
        assert stats(broken)["requests"] <= 4  # at most the one sent before the poll
        assert stats(routes.good)["requests"] >= 13
    finally:
        one.stop()
        two.stop()
        broken.stop()


def test_after_the_cool_down_one_probe_closes_it_again(
    tmp_path: Path, routes: Routes, alice: Any, redis_client: Any
) -> None:
    relay = start(tmp_path, TP_BREAKER_COOLDOWN="0.5")
    revived = None
    try:
        routes.publish(relay)  # the first route's port: nothing listens there
        secret = key_with(alice)
        for _ in range(3):
            served(relay, secret)
        assert is_open(redis_client, routes.down)

        # Another relay holds the probe's lease: this one still skips the route.
        revived = start_in_thread(port=routes.port)
        redis_client.set(state.breaker_probe(routes.down), "1", px=60_000)
        wait_until(lambda: time.time() * 1000 > int(until_ms(redis_client, routes.down)))
        served(relay, secret)
        assert stats(revived)["requests"] == 0

        # The lease given back, the next request probes it: answered, the breaker closes.
        redis_client.delete(state.breaker_probe(routes.down))
        served(relay, secret)
        assert stats(revived)["requests"] == 1
        # The relay records the probe's outcome once the answer has gone out.
        wait_until(lambda: not is_open(redis_client, routes.down))
        assert redis_client.hget(state.BREAKERS, routes.down) is None
        served(relay, secret)
        assert stats(revived)["requests"] == 2
    finally:
        relay.stop()
        if revived is not None:
            revived.stop()


def until_ms(redis_client: Any, route: str) -> str:
    return str(redis_client.hget(state.BREAKERS_OPEN, route)).split("|")[0]


def test_a_model_whose_every_route_is_open_fails_at_once(
    tmp_path: Path, routes: Routes, alice: Any, redis_client: Any
) -> None:
    relay = start(tmp_path)
    try:
        route_model(relay, MODEL, ("breaker-down", f"http://127.0.0.1:{routes.port}/v1", 0))
        secret = key_with(alice)
        for _ in range(3):
            status, _, _ = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
            assert status == 502
        status, headers, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
        assert status == 503, body
        assert body["error"]["code"] == "upstream_unavailable"
        assert 1 <= int(headers["retry-after"]) <= 30
    finally:
        relay.stop()


def test_refused_requests_do_not_open_it(
    tmp_path: Path, routes: Routes, alice: Any, redis_client: Any
) -> None:
    refusing = start_in_thread(error="400")
    relay = start(tmp_path)
    try:
        routes.publish(relay, refusing.base_url)
        secret = key_with(alice)
        for _ in range(5):
            status, _, _ = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
            assert status == 400
        assert stats(refusing)["requests"] == 5
        assert not is_open(redis_client, routes.down)
    finally:
        relay.stop()
        refusing.stop()


def test_the_admin_shows_each_routes_health(
    routes: Routes, operator: Any, redis_client: Any
) -> None:
    route_model_quietly(routes)
    until = int((time.time() + 600) * 1000)
    redis_client.hset(state.BREAKERS, routes.down, json.dumps({"f": 5, "u": until}))
    admin = Client()
    admin.force_login(operator)
    page = admin.get("/admin/catalog/route/", {"q": "breaker-"}).content.decode()
    assert "open until " in page and "5 failures in a row" in page
    assert "closed" in page  # the good route

    down = Route.objects.get(provider__slug="breaker-down")
    page = admin.get(f"/admin/catalog/route/{down.pk}/change/").content.decode()
    assert "Health" in page and "open until " in page


def route_model_quietly(routes: Routes) -> None:
    """The two routes in the database only (no relay to publish to)."""
    model = Model.objects.get(id=MODEL)
    for slug, priority in (("breaker-down", 0), ("breaker-up", 1)):
        provider, _ = Provider.objects.update_or_create(
            slug=slug, defaults={"name": slug, "base_url": routes.good.base_url}
        )
        Route.objects.create(
            model=model, provider=provider, upstream_model=model.upstream_model, priority=priority
        )


def test_the_model_page_says_which_route_is_failing(
    routes: Routes, redis_client: Any, client: Client
) -> None:
    route_model_quietly(routes)
    others = Route.objects.filter(model_id=MODEL).exclude(provider__slug__startswith="breaker-")
    PriceVersion.objects.filter(route__in=others).delete()  # (a route's prices keep it)
    others.delete()
    redis_client.hset(state.BREAKERS_OPEN, routes.down, f"{int(time.time() * 1000)}|5")
    shown = {r.provider_slug: r.open for r in route_figures(Model.objects.get(id=MODEL))}
    assert shown == {"breaker-down": True, "breaker-up": False}
    html = render_to_string(
        "catalog/partials/route_figures.html",
        {"route_figures": route_figures(Model.objects.get(id=MODEL))},
    )
    assert 'data-state="open"' in html and 'data-state="closed"' in html
    assert "Failing now: requests go to the other routes" in html


def test_publishing_the_catalog_forgets_the_breakers_of_routes_it_no_longer_serves(
    catalog: None, redis_client: Any
) -> None:
    from catalog.sync import publish

    route = Route.objects.select_related("provider").filter(model_id=MODEL).first()
    assert route is not None
    live = state.route_id(MODEL, route.provider.slug, route.upstream_model)
    gone = state.route_id(MODEL, "deleted-provider", route.upstream_model)
    for name in (live, gone):
        redis_client.hset(state.BREAKERS, name, json.dumps({"f": 5, "u": 1}))
        redis_client.hset(state.BREAKERS_OPEN, name, "1|5")
    publish()
    assert redis_client.hget(state.BREAKERS, gone) is None
    assert redis_client.hget(state.BREAKERS_OPEN, gone) is None
    assert redis_client.hget(state.BREAKERS_OPEN, live) == "1|5"  # a served route keeps its own
    route.delete()
    publish()
    assert redis_client.hget(state.BREAKERS, live) is None
    assert redis_client.hget(state.BREAKERS_OPEN, live) is None
