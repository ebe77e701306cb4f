"""The relay's in-process view of Redis: key records and the catalog, kept fresh by pub/sub.

A record is cached until an eviction message names it. While the subscription is down the
cache is bypassed (every lookup goes to Redis), so a missed message can never keep a revoked
key alive; on every (re)subscription the cache is emptied for the same reason.

Provider API keys arrive encrypted in the catalog and are decrypted here, once per load, into
this process's memory only: requests read the plain key from the route, never decrypt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from core import keyformat, state
from core.secrets import SecretBox, SecretError

from . import byok
from .listing import Listing

log = logging.getLogger("relay")

MAX_CACHED_KEYS = 100_000


class Views:
    def __init__(
        self, redis: aioredis.Redis, pepper: bytes, secrets_keys: tuple[str, ...] = ()
    ) -> None:
        self.redis = redis
        self.pepper = pepper
        self.box = SecretBox(secrets_keys) if secrets_keys else None
        self.keys: dict[str, dict[str, Any] | None] = {}
        # Accounts' own provider keys (BYOK), opened, by account id; {} for an account with
        # none (cached too: most accounts have none).
        self.credentials: dict[int, byok.Credentials] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        # Every provider slug that serves a model: what routing preferences may name.
        self.providers: frozenset[str] = frozenset()
        self.listing = Listing({})  # /v1/models, built once per catalog load
        self.live = False  # subscribed: the cache may be trusted
        self.generation = 0  # bumped on every eviction; stale lookups don't fill the cache
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.load_catalog()
        self._task = asyncio.create_task(self._listen(), name="relay-evictions")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def key(self, secret: str) -> dict[str, Any] | None:
        digest = keyformat.digest(secret, self.pepper)
        if self.live and digest in self.keys:
            return self.keys[digest]
        generation = self.generation
        raw = await self.redis.get(state.key_record(digest))
        record = orjson.loads(raw) if raw else None
        if self.live and generation == self.generation:
            if len(self.keys) >= MAX_CACHED_KEYS:
                self.keys.clear()
            self.keys[digest] = record
        return record

    async def byok(self, account: int) -> byok.Credentials:
        """The account's own provider keys, cached like key records (and evicted by
        ``byok:<account>``): a removed key is not used again once the message arrives."""
        if self.live and account in self.credentials:
            return self.credentials[account]
        generation = self.generation
        raw = await self.redis.get(state.byok(account))
        credentials = byok.open_record(raw, self.box, account)
        if self.live and generation == self.generation:
            if len(self.credentials) >= MAX_CACHED_KEYS:
                self.credentials.clear()
            self.credentials[account] = credentials
        return credentials

    def model(self, name: str) -> dict[str, Any] | None:
        model = self.models.get(name)
        if model is None and name in self.aliases:
            model = self.models.get(self.aliases[name])
        return model

    async def load_catalog(self) -> None:
        raw = await self.redis.get(state.CATALOG)
        if raw is None and self.models:
            # The portal only ever overwrites the catalog, so a key that is gone was lost by
            # Redis (a master restarted without persistence, a flush): serve the one loaded
            # until it is published again (beat does within a minute: catalog.tasks).
            log.warning("the catalog is missing from Redis; serving the one loaded")
            return
        data = orjson.loads(raw) if raw else {}
        models: dict[str, dict[str, Any]] = data.get("models", {})
        self.open_keys(models)
        listing = Listing(models)
        self.models = models
        self.providers = frozenset(
            str(route.get("provider")) for model in models.values() for route in model["routes"]
        )
        self.aliases = data.get("aliases", {})
        self.listing = listing

    def open_keys(self, models: dict[str, dict[str, Any]]) -> None:
        """Each route's ``api_key_encrypted`` becomes its ``api_key``, each token decrypted
        once. A key that cannot be opened leaves the route without one (the upstream refuses
        it), and is logged by provider, never by value."""
        opened: dict[str, str] = {}
        for model in models.values():
            for route in model.get("routes", []):
                token = str(route.pop("api_key_encrypted", "") or "")
                if token not in opened:
                    opened[token] = self._decrypt(token, str(route.get("provider")))
                route["api_key"] = opened[token]

    def _decrypt(self, token: str, provider: str) -> str:
        if not token:
            return ""
        if self.box is not None:
            try:
                return self.box.decrypt(token)
            except SecretError:
                pass
        log.error(
            "the API key of provider %s cannot be decrypted: is the key it was encrypted "
            "with in TP_SECRETS_KEYS?",
            provider,
        )
        return ""

    def _evict(self, message: str) -> None:
        self.generation += 1
        if message.startswith("key:"):
            self.keys.pop(message[4:], None)
        elif message.startswith("byok:"):
            try:
                self.credentials.pop(int(message[5:]), None)
            except ValueError:
                self.credentials.clear()
        else:
            self.keys.clear()
            self.credentials.clear()

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(state.EVICT_CHANNEL)
                self.generation += 1
                self.keys.clear()
                self.credentials.clear()
                self.live = True
                await self.load_catalog()
                async for message in pubsub.listen():
                    data = message.get("data")
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    self._evict(text)
                    if text in ("catalog", "*"):
                        await self.load_catalog()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: stop trusting the cache, retry.
                log.warning("eviction subscription lost (%s); retrying", type(exc).__name__)
            finally:
                self.live = False
                self.generation += 1
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # noqa: S110 - closing a dead connection
                    pass
            await asyncio.sleep(0.5)
