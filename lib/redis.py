"""The portal's and worker's connection to the relay's view in Redis.

With ``TP_REDIS_CLUSTER`` the view lives on a Redis Cluster and this is a cluster client:
every command the portal and worker send touches one key, or keys of one account (they share
its hash tag, ``core.state``), or is split by slot by the client (``DEL`` of many keys, a
``SCAN`` over every master)."""

from __future__ import annotations

from functools import cache
from typing import Any

import redis
from django.conf import settings
from django.core import checks
from redis.cluster import RedisCluster

from core import state


def connect(url: str, *, cluster: bool, **options: Any) -> redis.Redis:
    """A client for ``url``: a cluster client when ``cluster`` (typed as the plain client,
    whose commands it answers)."""
    if cluster:
        client: Any = RedisCluster.from_url(url, **options)
        return client  # type: ignore[no-any-return]
    return redis.Redis.from_url(url, **options)


@cache
def client() -> redis.Redis:
    """Answers decoded to str."""
    return connect(settings.REDIS_URL, cluster=settings.TP_REDIS_CLUSTER, decode_responses=True)


@cache
def script(source: str) -> redis.commands.core.Script:
    return client().register_script(source)


def evict(message: str) -> None:
    """Tell every relay to drop a cached record ("key:<digest>", "catalog" or "*"). On a
    cluster a PUBLISH reaches the subscribers of every node."""
    client().publish(state.EVICT_CHANNEL, message)


@checks.register(checks.Tags.caches)
def check_cluster_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """On a Redis Cluster, the broker and the cache must be a plain Redis of their own."""
    if not settings.TP_REDIS_CLUSTER:
        return []
    errors: list[checks.CheckMessage] = []
    for name, url in (
        ("CELERY_BROKER_URL", settings.CELERY_BROKER_URL),
        ("CACHE_URL", settings.CACHES["default"]["LOCATION"]),
    ):
        if url == settings.REDIS_URL:
            errors.append(
                checks.Error(
                    f"{name} is the Redis Cluster of REDIS_URL.",
                    hint=f"With TP_REDIS_CLUSTER=1, set {name} to a plain (non-cluster) Redis.",
                    id="tokenpapa.E001",
                )
            )
    return errors
