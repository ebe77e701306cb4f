"""Usage events leave the relay in batches through Celery (``send_task`` by name, so the relay
needs no Django). When the broker cannot take a batch it is written to a spool file on disk
(flushed and fsynced) and replayed later; the worker records idempotently, so a replay that
overlaps a successful send bills nothing twice."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from celery import Celery
from kombu import compression, serialization

from .metrics import BATCHES

log = logging.getLogger("relay")

TASK = "billing.record_usage"

# Publishing runs in a thread but holds the GIL the relay's event loop needs. Batches are encoded
# by orjson: the same JSON (application/json, so the worker decodes them as it decodes any task),
# and with the repr Celery would build skipped (below) a batch of 250 events is published in
# about half the time (0.9 ms instead of 1.9 ms here). Only an encoder is registered; decoding
# in this process is unchanged, and so is the name kombu gives application/json.
SERIALIZER = "tp-orjson"


def _register_serializer() -> None:
    registry: Any = serialization.registry  # type: ignore[attr-defined]  # kombu's stubs omit it
    if SERIALIZER in registry.name_to_type:
        return
    previous = registry.type_to_name.get("application/json")
    serialization.register(
        SERIALIZER,
        lambda data: orjson.dumps(data).decode(),
        None,
        content_type="application/json",
        content_encoding="utf-8",
    )
    if previous is not None:
        registry.type_to_name["application/json"] = previous


# Batches are compressed (zlib, as kombu's "zlib"/"gzip": content type application/x-gzip, which
# every worker decompresses by itself). Events of the benchmark (one account and model) are ~580
# bytes of JSON each and ~29 compressed (their request ids are most of what is left); a queued
# message ~40 bytes an event instead of ~780 (base64 and the envelope). The broker holds a batch
# twice (in the queue, then as the worker's unacknowledged copy), so a queue that grows while the
# workers are down grows ~19x slower in Redis's memory; and the worker's main process, which
# decodes, copies and pipes each message, has that much less to move. Level 1: ~1.1 ms a batch of
# 1,000 here, against 2.2 ms at zlib's default level, about as small.
COMPRESSION = "application/x-gzip"


def _register_compression() -> None:
    # The encoder of this process only (the relay sends nothing else through kombu); kombu's
    # decoder, and so every worker, is unchanged.
    compression.register(
        functools.partial(zlib.compress, level=1),
        zlib.decompress,
        COMPRESSION,
        aliases=["gzip", "zlib"],
    )


class Reporter:
    def __init__(
        self,
        broker_url: str,
        spool_dir: Path,
        *,
        batch_size: int = 1000,
        interval: float = 0.25,
        replay_interval: float = 5.0,
    ) -> None:
        _register_serializer()
        _register_compression()
        self.celery = Celery("relay", broker=broker_url, set_as_current=False)
        self.celery.conf.update(
            task_serializer=SERIALIZER,
            task_compression=COMPRESSION,
            broker_connection_timeout=2,
            broker_transport_options={"socket_connect_timeout": 2, "socket_timeout": 5},
        )
        self.spool_dir = spool_dir
        self.batch_size = batch_size
        self.interval = interval
        self.replay_interval = replay_interval
        self.buffer: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        # One thread: kombu producers are not shared between threads, and order is kept.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage")
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.spooled = 0

    def add(self, event: dict[str, Any]) -> None:
        self.buffer.append(event)
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="usage-flush"),
            asyncio.create_task(self._replay_loop(), name="usage-replay"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.flush(everything=True)
        self._executor.shutdown(wait=True)

    async def flush(self, *, everything: bool = False) -> None:
        """Send the events buffered when it is called, in batches of at most ``batch_size``.
        Events that arrive while it sends wait for the next flush: chasing them sent a batch
        of one or two events after every batch at low rates (each a task and a transaction
        for the worker), seven at a time at ~800 requests a second. ``everything`` sends
        those too (at stop)."""
        due = len(self.buffer)
        while self.buffer and (everything or due > 0):
            # From the front: the events due first; a last batch is topped up with newer ones.
            batch, self.buffer = self.buffer[: self.batch_size], self.buffer[self.batch_size :]
            due -= len(batch)
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(self._executor, self._send, batch):
                await loop.run_in_executor(self._executor, self._spool, batch)

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        try:
            self.celery.send_task(
                TASK,
                args=[batch],
                # Celery would otherwise walk the whole batch to build a repr for its headers.
                argsrepr=f"[<{len(batch)} usage events>]",
                kwargsrepr="{}",
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.5,
                },
            )
        except Exception as exc:
            log.warning("usage batch of %d not sent (%s); spooling", len(batch), exc)
            BATCHES.labels("failed").inc()
            return False
        self.sent += len(batch)
        BATCHES.labels("published").inc()
        return True

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        name = f"usage-{os.getpid()}-{time.time_ns()}"
        tmp = self.spool_dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(batch))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self.spool_dir / f"{name}.json")
        dir_fd = os.open(self.spool_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.spooled += len(batch)

    def replay_spool(self) -> int:
        """Send every spooled batch; a file is claimed by renaming it, so two relays sharing a
        spool never send one twice at once (and if they did, recording is idempotent)."""
        replayed = 0
        for path in sorted(self.spool_dir.glob("usage-*.json")):
            claimed = path.with_name(f".claimed-{os.getpid()}-{path.name}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue
            batch = orjson.loads(claimed.read_bytes())
            if self._send(batch):
                claimed.unlink()
                replayed += len(batch)
            else:
                claimed.rename(path)
                break
        return replayed

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def _replay_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # Files claimed by a relay that died mid-replay go back to the pile at start-up.
        for stale in self.spool_dir.glob(".claimed-*"):
            stale.rename(stale.with_name(stale.name.split("-", 2)[2]))
        while True:
            if any(self.spool_dir.glob("usage-*.json")):
                count = await loop.run_in_executor(self._executor, self.replay_spool)
                if count:
                    log.info("replayed %d spooled usage events", count)
            await asyncio.sleep(self.replay_interval)
