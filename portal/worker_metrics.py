"""The Celery worker's Prometheus metrics: tasks run, failed and their durations (from Celery's
signals), and the depth of the task queue (LLEN of the queue's list in the Redis broker, read at
each scrape). A worker started with ``TP_WORKER_METRICS_PORT`` serves them over HTTP on that
port (prometheus-client's own small server, in a thread); a worker of several processes (the
prefork pool) wants ``PROMETHEUS_MULTIPROC_DIR`` too, so the server adds up its children's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import signals
from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import REGISTRY, Collector

TASKS = Counter(
    "tp_worker_tasks",
    "Celery tasks run by this worker, by task and outcome (its end state).",
    ["task", "outcome"],
)
DURATION = Histogram(
    "tp_worker_task_duration_seconds",
    "Celery tasks' run time, by task.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)

_started: dict[str, float] = {}


class QueueDepth(Collector):
    """Messages waiting in the broker's default queue (Redis brokers: the list's length)."""

    def __init__(self, broker_url: str, queue: str = "celery") -> None:
        self.broker_url = broker_url
        self.queue = queue

    def collect(self) -> Iterable[Metric]:
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return
        try:
            with redis.Redis.from_url(
                self.broker_url, socket_connect_timeout=1, socket_timeout=1
            ) as client:
                depth = int(client.llen(self.queue))
        except (redis.RedisError, OSError):
            return
        family = GaugeMetricFamily(
            "tp_worker_queue_depth", "Messages waiting in the task queue.", labels=["queue"]
        )
        family.add_metric([self.queue], depth)
        yield family


@signals.task_prerun.connect
def _task_started(task_id: str = "", **kwargs: Any) -> None:
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_ended(task_id: str = "", task: Any = None, state: str = "", **kwargs: Any) -> None:
    started = _started.pop(task_id, None)
    name = getattr(task, "name", "") or "unknown"
    # success, failure, retry (Celery's state of the task as it ended)
    TASKS.labels(name, (state or "unknown").lower()).inc()
    if started is not None:
        DURATION.labels(name).observe(time.perf_counter() - started)


@signals.worker_init.connect
def _serve(**kwargs: Any) -> None:
    port = os.environ.get("TP_WORKER_METRICS_PORT", "")
    if not port:
        return
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # (prometheus-client leaves this constructor unannotated)
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    registry.register(QueueDepth(settings.CELERY_BROKER_URL))
    host = os.environ.get("TP_WORKER_METRICS_HOST", "0.0.0.0")  # noqa: S104 (a container's port)
    start_http_server(int(port), addr=host, registry=registry)
