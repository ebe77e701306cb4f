from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command

from billing import ledger, sync
from billing.models import LedgerEntry
from core.pricing import to_nanos

from .conftest import credit


def test_it_appends_entries_with_running_balance(alice: Any) -> None:
    account = alice.account  # her first entry: the operator's $10
    ledger.post_entry(account=account, amount=Decimal("10"), kind="adjustment")
    ledger.post_entry(account=account, amount=Decimal("-0.000012345"), kind="usage")
    entries = list(LedgerEntry.objects.filter(account=account).order_by("seq"))
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.balance_after for e in entries] == [
        Decimal("10"),
        Decimal("20"),
        Decimal("19.999987655"),
    ]
    assert sum(e.amount for e in entries) == ledger.balance(account)


def test_it_writes_the_balance_to_redis_after_commit(alice: Any) -> None:
    ledger.post_entry(account=alice.account, amount=Decimal("5.5"), kind="adjustment")
    assert sync.figures(alice.account.pk)["posted"] == to_nanos(Decimal("15.5"))  # 10 + 5.50


def test_it_refuses_floats_and_zero(alice: Any) -> None:
    with pytest.raises(TypeError):
        ledger.post_entry(account=alice.account, amount=1.5, kind="adjustment")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ledger.post_entry(account=alice.account, amount=Decimal(0), kind="adjustment")


def test_credit_and_balance_commands(alice: Any) -> None:
    call_command("credit", "alice@example.com", "12.34", "--note", "welcome", stdout=io.StringIO())
    out = io.StringIO()
    call_command("balance", "alice@example.com", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "22.340000000"  # her $10 and $12.34
    assert lines[1] == "on hold: 0.000000000"
    assert lines[2] == "available: 22.340000000"


def test_an_older_write_never_overwrites_a_newer_balance(alice: Any) -> None:
    account_id = alice.account.pk
    sync.post(account_id, seq=5, balance=Decimal("3"))
    sync.post(account_id, seq=4, balance=Decimal("100"))
    assert sync.figures(account_id)["posted"] == to_nanos(Decimal("3"))


def test_reconcile_is_clean_after_credits(alice: Any) -> None:
    credit(alice, 1)
    call_command("reconcile", stdout=io.StringIO())


def test_reconcile_exits_non_zero_on_drift(alice: Any, redis_client: Any) -> None:
    from django.core.management.base import CommandError

    from core import state

    credit(alice, 1)
    redis_client.hset(state.account(alice.account.pk), "posted", 5)
    with pytest.raises(CommandError):
        call_command("reconcile", stdout=io.StringIO(), stderr=io.StringIO())
    call_command("syncredis", stdout=io.StringIO())
    call_command("reconcile", stdout=io.StringIO())


def test_stale_holds_are_released(alice: Any, redis_client: Any) -> None:
    import time

    from billing.sync import release_stale_holds
    from core import state

    credit(alice, 1)
    account_id = alice.account.pk
    redis_client.hset(state.account_holds(account_id), "req_dead", "1000|")
    redis_client.hincrby(state.account(account_id), "held", 1000)
    redis_client.zadd(state.hold_times(account_id), {"req_dead": time.time() - 7200})
    assert release_stale_holds(3600, time.time()) == 1
    assert sync.figures(account_id)["held"] == 0
    call_command("reconcile", stdout=io.StringIO())


@pytest.mark.parametrize("settled", [300, 1_203])
def test_posting_forgets_exactly_the_recorded_requests_unposted_costs(
    alice: Any, redis_client: Any, settled: int
) -> None:
    """Both ways the script forgets costs (a hash of up to 1,024 fields read whole, a larger one
    500 ids at a time), ids Redis does not know (posted before, or never settled), and costs
    whose sum passes 2^52 nano-dollars: what is left unposted is exactly the requests not
    posted, to the nano-dollar."""
    from core import state

    account_id = alice.account.pk
    unposted_key = state.account_unposted(account_id)
    costs = {f"req_{i:04d}": 1_000 + i for i in range(settled)}
    costs["req_big_1"] = 3_000_000_000_000_000
    costs["req_big_2"] = 2_000_000_000_000_007
    redis_client.hset(unposted_key, mapping=costs)
    redis_client.hset(state.account(account_id), "unposted", sum(costs.values()))
    kept = {"req_0007", "req_0299"} | (
        {"req_0499", "req_0500", "req_1202"} if settled > 500 else set()
    )
    posted = [rid for rid in costs if rid not in kept] + ["req_gone", "req_never"]
    sync.post_many(
        [sync.Posting(account_id=account_id, seq=99, balance=Decimal("7"), request_ids=posted)]
    )
    figures = sync.figures(account_id)
    assert figures["posted"] == to_nanos(Decimal("7"))
    assert figures["unposted"] == sum(costs[rid] for rid in kept)
    assert set(redis_client.hkeys(unposted_key)) == kept
    # Repeating it (a redelivered batch) changes nothing.
    sync.post_many(
        [sync.Posting(account_id=account_id, seq=99, balance=Decimal("7"), request_ids=posted)]
    )
    assert sync.figures(account_id)["unposted"] == sum(costs[rid] for rid in kept)
