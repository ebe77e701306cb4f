"""The portal's observability: the request id and request metrics (a middleware), liveness
(``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``).

``/metrics`` answers only the machine itself (127.0.0.1, ::1), the peers of
``TP_TRUSTED_PROXIES`` (a scraper inside the deployment's network), or anyone presenting
``Authorization: Bearer <TP_METRICS_TOKEN>``. With several portal processes, set
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory shared by them) and any process answers for
all; without it each answers for itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY

from core import jsonlog
from lib.redis import connect

REQUESTS = Counter(
    "tp_portal_requests",
    "Portal requests, by method, view (the URL pattern's name) and HTTP status.",
    ["method", "view", "status"],
)
DURATION = Histogram(
    "tp_portal_request_duration_seconds",
    "Portal requests' time, from the middleware's view of them.",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# A request id a client or proxy sends is kept when it looks like one (no log injection).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_LOCAL = ("127.0.0.1", "::1")


class RequestObservability:
    """Sets the request id (the client's ``X-Request-ID`` when sane, else a new one) for the
    request's log lines and its response, and counts the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else "req_" + os.urandom(12).hex()
        jsonlog.REQUEST_ID.set(request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        view = (match.view_name or "unnamed") if match is not None else "unmatched"
        REQUESTS.labels(request.method or "", view, str(response.status_code)).inc()
        DURATION.labels(view).observe(time.perf_counter() - started)
        response.headers.setdefault("X-Request-ID", request_id)
        return response


def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers (no I/O)."""
    return JsonResponse({"status": "ok"})


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _redis(url: str, *, cluster: bool = False) -> bool:
    """A PING answered (on a cluster: by every master, with every slot served)."""
    try:
        with connect(url, cluster=cluster, socket_connect_timeout=1, socket_timeout=1) as client:
            if cluster and client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False  # redis-py parses the reply into a dict
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _broker(url: str) -> bool:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _redis(url)
    try:
        with Connection(url, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            return True
    except Exception:
        return False


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready: the database answers SELECT 1, Redis a PING, and the broker takes a connection."""
    checks = {
        "database": _database(),
        "redis": _redis(settings.REDIS_URL, cluster=settings.TP_REDIS_CLUSTER),
        "broker": _broker(settings.CELERY_BROKER_URL),
    }
    ready = all(checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


def _trusted(address: str) -> bool:
    if address in _LOCAL:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in _env_proxies():
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def _env_proxies() -> list[str]:
    return [p.strip() for p in os.environ.get("TP_TRUSTED_PROXIES", "").split(",") if p.strip()]


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        # (prometheus-client leaves this constructor unannotated)
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    token = os.environ.get("TP_METRICS_TOKEN", "").encode()
    presented = request.headers.get("Authorization", "").encode()
    allowed = _trusted(request.META.get("REMOTE_ADDR", "")) or (
        bool(token) and hmac.compare_digest(presented, b"Bearer " + token)
    )
    if not allowed:
        return HttpResponse(status=403)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
