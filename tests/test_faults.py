"""Faults: a private broker that stops, a worker killed mid-load, two relays, a burst of
concurrent requests against a small balance. Nothing here touches the shared services'
processes: the broker is a private redis-server on its own port."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum

from billing import ledger
from billing.models import LedgerEntry, UsageEvent
from core.pricing import cost
from keys.models import ApiKey
from keys.services import issue_key, revoke_key

from .conftest import ROOT, PrivateRedis, credit, start_relay, wait_until
from .test_relay import chat, post, price_of, recorded

pytestmark = pytest.mark.usefixtures("catalog")


WORKER_APP_NAME = "tp-test-worker"  # its PostgreSQL connections' application_name


def worker_process(broker_url: str, log: Path) -> subprocess.Popen[bytes]:
    db = settings.DATABASES["default"]
    environ = {
        **os.environ,
        "PGAPPNAME": WORKER_APP_NAME,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "TP_KEY_PEPPER": settings.TP_KEY_PEPPER.decode(),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=environ,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, persist=True)
    server.start()
    yield server
    server.stop()


def test_a_killed_worker_and_a_stopped_broker_lose_and_double_nothing(
    tmp_path: Path, broker: PrivateRedis, make_user: Any
) -> None:
    user = make_user("fran@example.com")
    credit(user, 50)
    _, secret = issue_key(account=user.account, name="load")
    relay = start_relay(
        tmp_path,
        CELERY_BROKER_URL=broker.url,
        TP_USAGE_BATCH_INTERVAL="0.05",
        TP_SPOOL_REPLAY_INTERVAL="0.5",
    )
    worker_log = tmp_path / "worker.log"
    worker = worker_process(broker.url, worker_log)
    ok: list[str] = []
    stop = threading.Event()

    def load() -> None:
        url = f"{relay.base_url}/chat/completions"
        while not stop.is_set() and len(ok) < 400:
            status, headers, _ = post(url, chat("mistral-small"), key=secret, x_demo_latency_ms="5")
            if status == 200:
                ok.append(headers["x-request-id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(ok) >= 60, timeout=30)
        worker.send_signal(signal.SIGKILL)  # mid-load, possibly mid-task
        worker.wait(10)
        wait_until(lambda: len(ok) >= 120, timeout=30)
        broker.stop()  # the relay must spool from now on
        wait_until(lambda: any(relay.spool_dir.glob("usage-*.json")), timeout=15)
        wait_until(lambda: len(ok) >= 200, timeout=30)
        broker.start()
        worker = worker_process(broker.url, worker_log)
        wait_until(lambda: len(ok) >= 260, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    try:
        wait_until(
            lambda: UsageEvent.objects.filter(account=user.account).count() == len(ok),
            timeout=60,
            interval=0.5,
        )
        assert not any(relay.spool_dir.glob("usage-*.json"))
        assert set(
            UsageEvent.objects.filter(account=user.account).values_list("request_id", flat=True)
        ) == set(ok)
        debits = LedgerEntry.objects.filter(account=user.account, kind="usage").aggregate(
            s=Sum("amount")
        )["s"]
        costs = UsageEvent.objects.filter(account=user.account).aggregate(s=Sum("cost"))["s"]
        assert -debits == costs
        assert ledger.balance(user.account) == Decimal(50) - costs
        call_command("reconcile", stdout=io.StringIO())
    finally:
        worker.terminate()
        worker.wait(10)
        relay.stop()


def test_the_worker_keeps_one_database_connection_and_outlives_its_loss(
    tmp_path: Path, broker: PrivateRedis, make_user: Any
) -> None:
    """A batch is not worth a new PostgreSQL connection; a connection the database dropped
    between batches is noticed before the next one (Django's health check), not by a failure."""
    user = make_user("ida@example.com")
    credit(user, 5)
    _, secret = issue_key(account=user.account, name="conn")
    relay = start_relay(tmp_path, CELERY_BROKER_URL=broker.url, TP_USAGE_BATCH_INTERVAL="0.05")
    worker_log = tmp_path / "worker.log"
    worker = worker_process(broker.url, worker_log)
    workers = (
        "FROM pg_stat_activity WHERE datname = current_database() "
        f"AND application_name = '{WORKER_APP_NAME}'"
    )

    def record_one() -> None:
        status, headers, _ = post(f"{relay.base_url}/chat/completions", chat(), key=secret)
        assert status == 200
        recorded(headers["x-request-id"])

    def worker_connections() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pid {workers}")
            return {row[0] for row in cursor.fetchall()}

    try:
        record_one()
        wait_until(lambda: len(worker_connections()) == 1, timeout=5)
        first = worker_connections()
        for _ in range(3):
            record_one()
        assert worker_connections() == first
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_terminate_backend(pid) {workers}")
        started = time.monotonic()
        record_one()
        assert time.monotonic() - started < 5
        assert "recording a usage batch failed" not in worker_log.read_text()
        assert worker_connections() not in (set(), first)
    finally:
        worker.terminate()
        worker.wait(10)
        relay.stop()


def test_two_relays_refuse_a_revoked_key_within_a_second(
    tmp_path: Path, relay: Any, make_user: Any
) -> None:
    user = make_user("gus@example.com")
    credit(user, 1)
    key, secret = issue_key(account=user.account, name="shared")
    other = start_relay(tmp_path)
    try:
        relays = [relay, other]
        for r in relays:
            assert post(f"{r.base_url}/chat/completions", chat(), key=secret)[0] == 200
        revoke_key(key=ApiKey.objects.get(pk=key.pk))
        revoked = time.monotonic()
        for r in relays:
            wait_until(
                lambda r=r: post(f"{r.base_url}/chat/completions", chat(), key=secret)[0] == 401,
                timeout=1,
                interval=0.02,
            )
        assert time.monotonic() - revoked < 1
    finally:
        other.stop()


def test_two_hundred_concurrent_requests_against_a_balance_for_one_hundred(
    relay: Any, make_user: Any, worker: Any
) -> None:
    user = make_user("hal@example.com")
    body = chat("mistral-small", max_tokens=50)
    raw_size = len(json.dumps(body).encode())
    worst = cost(price_of("mistral-small"), prompt_tokens=raw_size, completion_tokens=50)
    credit(user, worst * 100)
    _, secret = issue_key(account=user.account, name="burst")

    async def burst() -> list[int]:
        # The upstream reports exactly the tokens the hold assumed, so every admitted request
        # costs one hundredth of the balance however the requests interleave.
        headers = {
            "Authorization": f"Bearer {secret}",
            "x-demo-latency-ms": "300",
            "x-demo-prompt-tokens": str(raw_size),
            "x-demo-completion-tokens": "50",
        }
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.post(
                    f"{relay.base_url}/chat/completions", data=json.dumps(body), headers=headers
                ) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one() for _ in range(200)))

    # In a thread of its own: the browser tests' Playwright keeps an event loop in this one.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        statuses = pool.submit(asyncio.run, burst()).result()
    admitted = statuses.count(200)
    assert admitted == 100
    assert admitted + statuses.count(402) == 200, sorted(set(statuses))
    wait_until(
        lambda: UsageEvent.objects.filter(account=user.account).count() == admitted, timeout=20
    )
    costs = UsageEvent.objects.filter(account=user.account).aggregate(s=Sum("cost"))["s"]
    assert ledger.balance(user.account) == worst * 100 - costs
    assert ledger.balance(user.account) >= 0
    call_command("reconcile", stdout=io.StringIO())
