"""Route health: one circuit breaker per route (model × provider × upstream model), shared by
every relay through Redis (keys and the transition script in :mod:`core.state`).

A route opens after ``failures`` upstream errors in a row, or when at least ``error_rate`` per
cent of at least ``min_requests`` requests in a ``window`` failed (upstream errors only: 5xx,
unreachable, timed out; not 4xx or 429). While open, relays skip it without connecting. After
the cool-down it is half-open: one request at a time, holding a lease in Redis, probes it;
its success closes the breaker, its failure re-opens it for twice the cool-down (capped).

The hot path never waits for Redis: a relay keeps the open breakers in memory, polled every
``refresh`` seconds (one HGETALL of a hash that is usually empty), and counts successes
locally, sent with the same poll. Failures and probes go to Redis at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from core import state

log = logging.getLogger("relay")


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window: float = 60.0
    min_requests: int = 20
    error_rate: int = 50
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    refresh: float = 1.0
    probe_lease: float = 60.0


@dataclass(frozen=True)
class Verdict:
    """A route's breaker as Redis left it."""

    open: bool
    until: float  # seconds since the epoch; 0 when closed
    failures: int


class Breakers:
    def __init__(self, redis: aioredis.Redis, settings: BreakerSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.script = redis.register_script(state.BREAKER)
        # route id -> (open until, in seconds since the epoch; consecutive failures)
        self.open: dict[str, tuple[float, int]] = {}
        self.successes: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.refresh()

    # ---- the hot path ----------------------------------------------------------------------

    def due(self, route: str) -> bool | None:
        """None: the route is closed here. False: open, skip it. True: its cool-down is over
        (half-open): try it if this request gets the probe's lease (:meth:`lease`)."""
        entry = self.open.get(route)
        if entry is None:
            return None
        return time.time() >= entry[0]

    def retry_after(self) -> int:
        """Seconds until the first open breaker becomes half-open (at least 1)."""
        soonest = min((until for until, _ in self.open.values()), default=0.0)
        return max(1, int(soonest - time.time() + 0.999))

    async def lease(self, route: str) -> bool:
        try:
            taken = await self.redis.set(
                state.breaker_probe(route),
                b"1",
                nx=True,
                px=int(self.settings.probe_lease * 1000),
            )
        except redis.exceptions.RedisError as exc:
            log.warning("route health: no probe lease for %s: %s", route, exc)
            return False
        return bool(taken)

    def succeeded(self, route: str) -> None:
        self.successes[route] += 1

    async def record(self, route: str, *, failed: bool, probe: bool = False) -> Verdict | None:
        """A failure, or a probe's outcome, sent at once; the new state is applied here too.
        None if Redis could not be reached (the request goes on regardless)."""
        try:
            verdict = await self._send(
                route, ok=0 if failed else 1, failed=int(failed), probe=probe
            )
        except redis.exceptions.RedisError as exc:
            log.warning("route health: could not record %s: %s", route, exc)
            return None
        self._apply(route, verdict)
        if verdict.open and failed:
            log.warning(
                "route %s is open until %s after %d failures",
                route,
                time.strftime("%H:%M:%S", time.gmtime(verdict.until)),
                verdict.failures,
            )
        elif probe and not verdict.open:
            log.info("route %s closed: its probe succeeded", route)
        return verdict

    async def release(self, route: str) -> None:
        """Give the lease back unused (the probe ended with no verdict: the client left)."""
        try:
            await self.redis.delete(state.breaker_probe(route))
        except redis.exceptions.RedisError as exc:
            log.warning("route health: could not release the probe of %s: %s", route, exc)

    # ---- the poll ----------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh)
            await self.refresh()

    async def refresh(self) -> None:
        """Send the successes counted here, then read the open breakers."""
        successes, self.successes = self.successes, Counter()
        try:
            for route, count in successes.items():
                self._apply(route, await self._send(route, ok=count, failed=0, probe=False))
            raw: dict[Any, Any] = await self.redis.hgetall(state.BREAKERS_OPEN)
        except redis.exceptions.RedisError as exc:
            log.warning("route health: Redis unavailable, keeping the last view: %s", exc)
            return
        self.open = {_text(name): _parse(_text(value)) for name, value in raw.items()}

    async def _send(self, route: str, *, ok: int, failed: int, probe: bool) -> Verdict:
        s = self.settings
        reply: Any = await self.script(
            keys=[state.BREAKERS, state.BREAKERS_OPEN, state.breaker_probe(route)],
            args=[
                route,
                ok,
                failed,
                int(time.time() * 1000),
                1 if probe else 0,
                s.failures,
                int(s.window * 1000),
                s.min_requests,
                s.error_rate,
                int(s.cooldown * 1000),
                int(s.max_cooldown * 1000),
            ],
        )
        opened, until, failures = (int(v) for v in reply)
        return Verdict(bool(opened), until / 1000, failures)

    def _apply(self, route: str, verdict: Verdict) -> None:
        if verdict.open:
            self.open[route] = (verdict.until, verdict.failures)
        else:
            self.open.pop(route, None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(value: str) -> tuple[float, int]:
    until, _, failures = value.partition("|")
    return int(until) / 1000, int(failures or 0)
