"""The lean script client (:mod:`relay.scripts`) for a Redis Cluster.

Every key of one balance-protocol script call carries its account's hash tag ``{a<id>}``
(``core.state``), so a call lives in one hash slot and goes whole to the master that serves
it. This client keeps a map of slot to master from ``CLUSTER SLOTS`` and one pipelined
:class:`~relay.scripts.ScriptClient` per master, sends each ``EVALSHA`` to the master of its
first key's slot, and follows the cluster's redirections:

- ``MOVED <slot> <host>:<port>``: the slot lives elsewhere now (a resharding or a failover);
  the map is read again and the call sent where the cluster said;
- ``ASK <slot> <host>:<port>``: the slot is being migrated and this key is already on the
  target; the call goes there once, right after ``ASKING`` on the same connection;
- ``TRYAGAIN`` (a multi-key call while its slot is half migrated) and a master that cannot be
  reached (a failover in progress): the map is read again after a short pause.

It answers and fails as :class:`~relay.scripts.ScriptClient` does (redis-py's exceptions), so a
:class:`~relay.scripts.Script` runs on either. Seed URL: ``redis://[user:password@]host:port``
(a cluster has database 0 only); every master is reached with the same credentials.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions
from redis.connection import parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from relay.scripts import Arg, ScriptClient

Address = tuple[str, int]

# Redirections followed for one call before giving up: a healthy cluster needs at most two
# (a MOVED after a resharding, then an ASK while the slot is migrating).
MAX_REDIRECTS = 5
RETRY_PAUSE = 0.05  # seconds before reading the map again after TRYAGAIN or a lost master


def first_key(args: tuple[Arg, ...]) -> bytes:
    """The key a command is routed by: the first key of an ``EVAL``/``EVALSHA``."""
    if len(args) < 4 or str(args[0]).upper() not in ("EVAL", "EVALSHA") or not int(args[2]):
        raise redis.exceptions.DataError("only EVAL/EVALSHA with keys can be routed by slot")
    key = args[3]
    return key if isinstance(key, bytes) else str(key).encode()


def _address(text: str) -> tuple[int, Address]:
    """``"<slot> <host>:<port>"`` of a MOVED/ASK reply."""
    slot, _, where = text.partition(" ")
    host, _, port = where.rpartition(":")
    return int(slot), (host, int(port))


class ClusterScriptClient:
    """Runs EVALSHA/EVAL calls on a Redis Cluster, each on the master of its slot."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        if int(options.get("db") or 0):
            raise ValueError("a Redis Cluster has database 0 only")
        self.seed: Address = (options.get("host") or "localhost", int(options.get("port") or 6379))
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.nodes: dict[Address, ScriptClient] = {}
        self.slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped by every refresh of the map

    def node(self, address: Address) -> ScriptClient:
        client = self.nodes.get(address)
        if client is None:
            client = ScriptClient(
                "redis://",
                connect_timeout=self.connect_timeout,
                timeout=self.timeout,
            )
            client.host, client.port = address
            client.username, client.password = self.username, self.password
            self.nodes[address] = client
        return client

    async def refresh(self, seen: int | None = None) -> None:
        """Read the slot map from the first node that answers (known masters, then the seed).
        ``seen``: the generation the caller saw; if another caller refreshed since, done."""
        async with self._lock:
            if seen is not None and seen != self._generation:
                return
            errors: list[str] = []
            for address in [*self.nodes, self.seed]:
                try:
                    ranges = await self.node(address).execute("CLUSTER", "SLOTS")
                except redis.exceptions.RedisError as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
                for start, end, master, *_replicas in ranges:
                    host = master[0].decode() if master[0] else address[0]
                    slots[start : end + 1] = [(host, int(master[1]))] * (end - start + 1)
                self.slots = slots
                self._generation += 1
                live = set(slots)
                for gone in [a for a in self.nodes if a not in live and a != self.seed]:
                    await self.nodes.pop(gone).aclose()
                return
            raise redis.exceptions.ConnectionError(
                "no node of the Redis Cluster answered CLUSTER SLOTS: " + "; ".join(errors)
            )

    async def execute(self, *args: Arg) -> Any:
        slot = int(key_slot(first_key(args)))
        asking: Address | None = None
        for _ in range(MAX_REDIRECTS):
            generation = self._generation
            address = asking or self.slots[slot]
            if address is None:
                await self.refresh(generation)
                address = self.slots[slot]
                if address is None:
                    raise redis.exceptions.ClusterDownError(f"slot {slot} is not served")
            try:
                if asking is not None:
                    asking = None
                    return await self.node(address).execute_asking(*args)
                return await self.node(address).execute(*args)
            except redis.exceptions.ResponseError as exc:
                message = str(exc)
                if message.startswith("MOVED "):
                    moved_slot, target = _address(message[len("MOVED ") :])
                    self.slots[moved_slot] = target
                    await self.refresh(generation)
                    self.slots[moved_slot] = self.slots[moved_slot] or target
                elif message.startswith("ASK "):
                    asking = _address(message[len("ASK ") :])[1]
                elif message.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                    await asyncio.sleep(RETRY_PAUSE)
                    await self.refresh(generation)
                else:
                    raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # The master may have failed over: once the map names another, try it.
                await asyncio.sleep(RETRY_PAUSE)
                await self.refresh(generation)
                if self.slots[slot] == address:
                    raise
        raise redis.exceptions.ClusterError(f"too many redirections for slot {slot}")

    async def aclose(self) -> None:
        nodes, self.nodes = self.nodes, {}
        for client in nodes.values():
            await client.aclose()
