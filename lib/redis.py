"""The portal's and worker's connection to the relay's view in Redis."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings

from core import state


@cache
def client() -> redis.Redis:
    """Answers decoded to str."""
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


@cache
def script(source: str) -> redis.commands.core.Script:
    return client().register_script(source)


def evict(message: str) -> None:
    """Tell every relay to drop a cached record ("key:<digest>", "catalog" or "*")."""
    client().publish(state.EVICT_CHANNEL, message)
