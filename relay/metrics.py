"""The relay's Prometheus metrics, served on ``GET /metrics`` (text exposition format).

Per relayed request, once it is over (:func:`observe`): a count by model, route (the provider
that answered) and HTTP status; the upstream's latency; the relay's own added latency (the
whole request less the upstream's part); for streams, the time to the first byte; and one
error per failed upstream attempt, by provider and kind (its outcome). Besides: the holds
outstanding (relayed requests in flight), the usage batches published or failed (counted by
:mod:`relay.reporter`), and at each scrape the spool's depth (batch files waiting on disk).

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them
(emptied before the relay starts) and prometheus-client keeps each process's values in files
there; any worker's ``/metrics`` then sums them all. Without it, each process exposes its own.

``TP_METRICS_TOKEN``, when set, must come as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .request import Request

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

# Seconds; the relay's own part is expected well under a millisecond, the upstream's in seconds.
_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "tp_relay_requests",
    "Relayed API requests, by model, route (provider) and HTTP status.",
    ["model", "route", "status"],
)
ADDED = Histogram(
    "tp_relay_added_latency_seconds",
    "The relay's own time in an answered request: the whole request less the upstream's part.",
    buckets=_FAST,
)
UPSTREAM = Histogram(
    "tp_relay_upstream_latency_seconds",
    "The upstream's time, from sending the request to the end of its answer, by provider.",
    ["route"],
    buckets=_SLOW,
)
TTFB = Histogram(
    "tp_relay_stream_ttfb_seconds",
    "Streams: from the client's request to the first bytes sent back.",
    buckets=_SLOW,
)
UPSTREAM_ERRORS = Counter(
    "tp_relay_upstream_errors",
    "Failed upstream attempts, by provider and kind (the attempt's outcome).",
    ["route", "kind"],
)
HOLDS = Gauge(
    "tp_relay_holds_outstanding",
    "Relayed requests holding money in Redis right now.",
    multiprocess_mode="livesum",
)
BATCHES = Counter(
    "tp_relay_usage_batches",
    "Usage batches handed to the broker (published) or refused by it (failed: spooled).",
    ["result"],
)


class SpoolDepth(Collector):
    """The spool's batch files, counted at each scrape (the directory is shared by workers)."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir

    def collect(self) -> Iterable[Metric]:
        try:
            depth = sum(1 for _ in self.spool_dir.glob("usage-*.json"))
        except OSError:
            depth = 0
        yield GaugeMetricFamily(
            "tp_relay_spool_depth", "Usage batch files waiting in the spool directory.", depth
        )


# The labelled children in use, by their labels: looking one up through .labels() costs more
# than counting in it (~3.5 us against ~1 us), and this runs once per request.
_counted: dict[tuple[str, str, int], Counter] = {}
_upstream: dict[str, Histogram] = {}


def observe(req: Request, now: float) -> None:
    """Count one relayed request that is over (called once, as the relay lets it go)."""
    route = req.route.get("provider", "")
    labels = (req.model.get("id", ""), route, req.status)
    counter = _counted.get(labels)
    if counter is None:
        # A client that left before any answer counts as nginx's 499 ("client closed request").
        counter = _counted[labels] = REQUESTS.labels(labels[0], route, str(req.status or 499))
    counter.inc()
    for provider, _model, kind in req.attempts:
        UPSTREAM_ERRORS.labels(provider, kind).inc()
    if req.upstream_done:
        upstream = req.upstream_done - req.upstream_sent
        histogram = _upstream.get(route)
        if histogram is None:
            histogram = _upstream[route] = UPSTREAM.labels(route)
        histogram.observe(upstream)
        if req.status == 200:
            ADDED.observe(max(0.0, now - req.started - upstream))
    if req.stream and req.ttfb:
        TTFB.observe(req.ttfb - req.started)


class Exposition:
    """What ``GET /metrics`` answers: this process's metrics, or every worker's."""

    def __init__(self, spool_dir: Path, token: str = "") -> None:
        self.token = token.encode()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.registry = CollectorRegistry()
            # (prometheus-client leaves this constructor unannotated)
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            self.registry = REGISTRY
        self.spool = _Only(SpoolDepth(spool_dir))

    def allowed(self, authorization: bytes) -> bool:
        if not self.token:
            return True
        return hmac.compare_digest(authorization, b"Bearer " + self.token)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(self.spool)


class _Only(CollectorRegistry):
    """A registry of one collector, kept apart so the process-wide registry stays as it is."""

    def __init__(self, collector: Collector) -> None:
        super().__init__(auto_describe=False)
        self.register(collector)
