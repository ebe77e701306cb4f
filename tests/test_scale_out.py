"""Scale-out: two relay processes and two Celery workers share one Redis and one database, and
a burst split across both relays is recorded exactly once — every answered request one usage
event, no request twice, the ledger debited by exactly the events' costs — with both workers
taking part."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum

from billing import ledger
from billing.models import LedgerEntry, UsageEvent

from .conftest import (
    ALICE_STARTS_WITH,
    ROOT,
    RelayProcess,
    publish_catalog,
    start_relay,
    wait_until,
)

BURST = 300
CONCURRENCY = 48
RECORDED = "Task billing.record_usage["


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def batches(self) -> int:
        """Usage batches this worker recorded (Celery logs each task that succeeded)."""
        return sum(
            1 for line in self.log().splitlines() if RECORDED in line and "succeeded" in line
        )

    def stop(self) -> None:
        self.process.terminate()  # a warm shutdown: the task in hand finishes first
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def database_url() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        f"/{db['NAME']}"
    )


def start_worker(tmp_path: Path, name: str, **env: str) -> WorkerProcess:
    """A real ``celery worker`` process on the test database and Redis, as in production
    (``env``: more of its environment)."""
    log_path = tmp_path / f"worker-{name}.log"
    environ = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "TP_KEY_PEPPER": settings.TP_KEY_PEPPER.decode(),
        "TP_SECRETS_KEYS": ",".join(settings.TP_SECRETS_KEYS),
        **env,
    }
    log = open(log_path, "wb")  # handed to the child process
    process = subprocess.Popen(
        [
            *(str(ROOT / ".venv" / "bin" / "celery"), "-A", "portal", "worker", "--pool", "solo"),
            *("-n", f"{name}@%h", "--loglevel", "info", "--without-mingle", "--without-gossip"),
        ],
        cwd=ROOT,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = WorkerProcess(name, process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker {name} exited at start-up: {worker.log()}")
        return "ready." in worker.log()

    wait_until(ready, timeout=30)
    return worker


@pytest.fixture
def relays(tmp_path: Path, catalog: None) -> Iterator[list[RelayProcess]]:
    started = [start_relay(tmp_path), start_relay(tmp_path)]  # own ports, logs and spools
    try:
        for relay in started:
            publish_catalog(relay)
        yield started
    finally:
        for relay in started:
            relay.stop()


@pytest.fixture
def workers(tmp_path: Path, transactional_db: None) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    try:
        started.append(start_worker(tmp_path, "w1"))
        started.append(start_worker(tmp_path, "w2"))
        yield started
    finally:
        for worker in started:
            worker.stop()


def split_burst(urls: list[str], secret: str, count: int) -> list[tuple[int, str]]:
    """``count`` chat requests, dealt in turn to ``urls``, ``CONCURRENCY`` at a time: each
    answer's status and request id."""
    body = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    )

    async def run() -> list[tuple[int, str]]:
        gate = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(url: str) -> tuple[int, str]:
                async with (
                    gate,
                    session.post(
                        f"{url}/chat/completions",
                        data=body,
                        headers={"Authorization": f"Bearer {secret}"},
                    ) as response,
                ):
                    await response.read()
                    return response.status, response.headers.get("x-request-id", "")

            return list(await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count))))

    # In a thread of its own: the browser tests' Playwright keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_two_relays_and_two_workers_record_a_burst_exactly_once(
    relays: list[RelayProcess], workers: list[WorkerProcess], alice: Any, alice_key: str
) -> None:
    answers = split_burst([relay.base_url for relay in relays], alice_key, BURST)

    ok = [request_id for status, request_id in answers if status == 200]
    assert len(ok) == BURST, sorted({status for status, _ in answers})
    assert len(set(ok)) == BURST  # every answer its own request id

    events = UsageEvent.objects.filter(account=alice.account)
    wait_until(lambda: events.count() >= BURST, timeout=30)
    # Every relay reported its requests and nothing arrived twice.
    assert sorted(events.values_list("request_id", flat=True)) == sorted(ok)

    costs = events.aggregate(total=Sum("cost"))["total"]
    assert costs > 0
    debits = LedgerEntry.objects.filter(
        account=alice.account, kind=LedgerEntry.Kind.USAGE
    ).aggregate(total=Sum("amount"))["total"]
    assert debits == -costs
    assert ledger.balance(alice.account) == ALICE_STARTS_WITH - costs
    assert isinstance(costs, Decimal)

    # Both workers did some of the recording, and the batches they logged are the ones sent.
    wait_until(lambda: all(worker.batches() > 0 for worker in workers), timeout=10)
    for worker in workers:
        assert "Traceback" not in worker.log(), worker.log()

    # The ledger, the usage events and Redis agree (holds released, unposted spend posted).
    wait_until(lambda: _reconciles(), timeout=15)


def _reconciles() -> bool:
    try:
        call_command("reconcile", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError:  # while the last batch is still being posted
        return False
    return True
