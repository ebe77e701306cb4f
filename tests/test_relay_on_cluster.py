"""The relay, the portal and the worker with the relay's state on a Redis Cluster: accounts
whose keys fall on every master are held, settled, posted and reconciled exactly, through the
real relay process and worker. Runs in the session `make test` starts on a local three-master
cluster (``python -m tests.redis_cluster``); skipped on a single Redis."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import call_command
from redis.crc import key_slot

from billing import ledger
from billing.models import UsageEvent
from core import state
from core.pricing import to_nanos
from keys.services import issue_key

from .conftest import credit, wait_until
from .test_relay import chat, post

pytestmark = [
    pytest.mark.usefixtures("catalog"),
    pytest.mark.skipif(
        not settings.TP_REDIS_CLUSTER,
        reason="runs on a Redis Cluster (python -m tests.redis_cluster)",
    ),
]


def masters() -> dict[int, tuple[str, int]]:
    """Each slot's master, from the cluster."""
    seed = redis_lib.Redis.from_url(settings.REDIS_URL)
    owners: dict[int, tuple[str, int]] = {}
    for start, end, master, *_ in seed.execute_command("CLUSTER", "SLOTS"):
        address = (master[0].decode() or "127.0.0.1", int(master[1]))
        owners.update(dict.fromkeys(range(start, end + 1), address))
    return owners


def test_accounts_on_every_master_are_held_settled_and_posted_exactly(
    relay: Any, make_user: Any, worker: Any, redis_client: Any
) -> None:
    owners = masters()
    people: dict[tuple[str, int], tuple[Any, str]] = {}
    n = 0
    while len(people) < len(set(owners.values())):
        user = make_user(f"spread{n}@example.com")
        n += 1
        master = owners[int(key_slot(state.account(user.account.pk).encode()))]
        if master in people:
            continue
        credit(user, 2)
        _, secret = issue_key(
            account=user.account, name="cluster", limits={"spend_cap": Decimal(1)}
        )
        people[master] = (user, secret)
    assert len(people) == 3  # one customer on each master

    def call(secret: str) -> str:
        status, headers, body = post(f"{relay.base_url}/chat/completions", chat(), key=secret)
        assert status == 200, body
        return str(headers["x-request-id"])

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(call, [secret for _, secret in people.values() for _ in range(4)]))
    wait_until(lambda: UsageEvent.objects.filter(request_id__in=ids).count() == len(ids), 20)

    for (host, port), (user, _) in people.items():
        account = user.account
        spent = sum(e.cost for e in UsageEvent.objects.filter(account=account))
        assert spent > 0
        balance = ledger.balance(account)
        assert balance == Decimal(2) - spent
        # The account's figures live on its master, and agree with the ledger.
        node = redis_lib.Redis(host=host, port=port, decode_responses=True)
        figures = wait_until(
            lambda account=account, node=node: (
                (f := node.hgetall(state.account(account.pk))).get("unposted") == "0" and f
            ),
            timeout=10,
        )
        assert int(figures["posted"]) == to_nanos(balance)
        assert int(figures["held"]) == 0
        assert node.hlen(state.account_holds(account.pk)) == 0
    call_command("reconcile", stdout=io.StringIO())  # exits non-zero on any drift
