"""Liveness and readiness: the relay's and the portal's /readyz follow a Redis of the test's own
as it stops and starts again (the shared one is never touched)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.test import Client

from catalog.sync import publish
from core import state

from .conftest import PrivateRedis, start_relay, wait_until

pytestmark = pytest.mark.usefixtures("catalog")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def probe(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_relay_is_ready_only_with_its_redis_and_a_catalog(
    tmp_path: Path, private_redis: PrivateRedis, redis_client: redis_lib.Redis
) -> None:
    publish()
    catalog = redis_client.get(state.CATALOG)
    assert catalog
    with redis_lib.Redis.from_url(private_redis.url) as private:
        private.set(state.CATALOG, catalog)
    relay = start_relay(tmp_path, REDIS_URL=private_redis.url, CELERY_BROKER_URL=private_redis.url)
    origin = relay.base_url.removesuffix("/v1")
    try:
        assert probe(f"{origin}/healthz") == (200, {"status": "ok"})
        assert probe(f"{origin}/readyz") == (
            200,
            {"status": "ready", "checks": {"redis": True, "catalog": True}},
        )
        private_redis.stop()
        wait_until(lambda: probe(f"{origin}/readyz")[0] == 503, timeout=5)
        assert probe(f"{origin}/readyz") == (
            503,
            {"status": "unavailable", "checks": {"redis": False, "catalog": True}},
        )
        assert probe(f"{origin}/healthz")[0] == 200  # alive all along
        private_redis.start()
        wait_until(lambda: probe(f"{origin}/readyz")[0] == 200, timeout=10)
    finally:
        relay.stop()


def test_a_relay_without_a_catalog_is_not_ready(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    relay = start_relay(tmp_path, REDIS_URL=private_redis.url, CELERY_BROKER_URL=private_redis.url)
    try:
        status, body = probe(f"{relay.base_url.removesuffix('/v1')}/readyz")
        assert status == 503
        assert body["checks"] == {"redis": True, "catalog": False}
    finally:
        relay.stop()


def test_the_portal_is_ready_only_with_its_database_redis_and_broker(
    settings: Any, private_redis: PrivateRedis
) -> None:
    settings.REDIS_URL = settings.CELERY_BROKER_URL = private_redis.url
    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": True, "redis": True, "broker": True},
    }
    private_redis.stop()
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["checks"] == {"database": True, "redis": False, "broker": False}
    assert client.get("/healthz").status_code == 200
    private_redis.start()
    assert client.get("/readyz").status_code == 200
