"""Recording usage batches at speed (issue 14): ``billing.usage.record_batch`` on PostgreSQL
writes each table with one prepared statement (``lib.pgbatch``), and the invariants hold.

- each request once, whatever the batch holds twice or a redelivery brings again: its row,
  its debit and its share of the rollups and of the route figures;
- one ledger debit per account and batch, exact in Decimal, appended after the last entry;
- Redis forgets the unposted cost of every request of the batch, recorded now or before, and
  learns each account's newest balance;
- mixed accounts, an unknown account (dropped, the others recorded), a key deleted before
  its events arrived (recorded with no key, still billed), two workers on one batch.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum

from billing import usage
from billing.models import DailyUsage, HourlyUsage, LedgerEntry, UsageEvent
from catalog.models import RouteHour
from core import state
from core.pricing import to_nanos
from keys.models import ApiKey
from lib import pgbatch
from lib.redis import client
from tests.conftest import credit

pytestmark = pytest.mark.django_db(transaction=True)


def _key(user: Any, name: str = "laptop") -> ApiKey:
    return ApiKey.objects.create(
        account=user.account,
        name=name,
        digest=f"{time.time_ns():064x}"[-64:],
        prefix="tp-sk-tst",
        last4="0000",
    )


def _event(user: Any, key: ApiKey | int, n: int, cost: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{user.pk}-{n}",
        "account": user.account.pk,
        "key": key if isinstance(key, int) else key.pk,
        "model": "mistral-small",
        "provider": "mistral",
        "upstream_model": "mistral-small-latest",
        "prompt_tokens": 100 + n,
        "completion_tokens": 20 + n,
        "cost": cost,
        "status": "ok",
        "streamed": True,
        "started_at": time.time() - n,
        "duration_ms": 900,
        "ttfb_ms": 120,
        **extra,
    }


def _unposted(user: Any, events: list[dict[str, Any]]) -> None:
    """What a relay leaves in Redis for each settled request: its cost, not yet posted."""
    r = client()
    for e in events:
        nanos = to_nanos(Decimal(e["cost"]))
        if r.hsetnx(state.account_unposted(user.account.pk), e["request_id"], nanos):
            r.hincrby(state.account(user.account.pk), "unposted", nanos)


def _ledger(user: Any) -> list[tuple[int, str, Decimal, Decimal]]:
    return list(
        LedgerEntry.objects.filter(account=user.account)
        .order_by("seq")
        .values_list("seq", "kind", "amount", "balance_after")
    )


def test_the_fast_path_is_taken() -> None:
    assert pgbatch.available(), "the suite runs on PostgreSQL, where record_batch uses pgbatch"


@pytest.mark.django_db
def test_text_columns_read_back_as_sent() -> None:
    """pgbatch sends a column of strings as one array literal: quotes, backslashes, commas,
    braces, blanks, an empty string, the word NULL and a missing value all come back as sent."""
    sent = ['say "hi"', "back\\slash", "a,b", "{x}", " padded ", "", "NULL", None, "été"]
    with pgbatch.cursor() as cur:
        (got,) = pgbatch.fetch(cur, "SELECT %s::varchar[]", [pgbatch.array(sent)])[0]
    assert got == sent


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent",
    [
        ["mistral-large-2", "mistral", "", "NULL", "a,b", "{x}", " padded ", "été"],  # one join
        ["only"],
        ["ok", 'say "hi"'],  # quoted element by element
        ["ok", "back\\slash"],
    ],
)
def test_texts_that_need_no_escaping_read_back_as_sent(sent: list[str]) -> None:
    """A column of plain texts goes as one join (``pgbatch._texts``); one needing an escape
    falls back to quoting each element. Either way each element comes back as sent."""
    with pgbatch.cursor() as cur:
        (got,) = pgbatch.fetch(cur, "SELECT %s::varchar[]", [pgbatch.array(sent)])[0]
    assert got == sent


def test_a_text_holding_the_join_separator_is_never_split() -> None:
    """The one-join path separates elements with a NUL: a text that holds one falls back to
    quoting each element, so it can never become two elements and shift the other columns
    (PostgreSQL then refuses the NUL itself)."""
    literal = pgbatch.array(["a\x00b", "c"])
    assert literal == '{"a\x00b","c"}'


@pytest.mark.django_db
def test_a_column_of_repeated_times_reads_back_as_sent() -> None:
    """A column of few distinct times (a rollup's hours) spells each once: same values back."""
    hours = [datetime(2026, 3, 29, h % 3, tzinfo=UTC) for h in range(10)] + [None]
    with pgbatch.cursor() as cur:
        (got,) = pgbatch.fetch(cur, "SELECT %s::timestamptz[]", [pgbatch.array(hours)])[0]
    assert got == hours


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cast", "sent"),
    [
        ("boolean", [True, None, False]),
        ("bigint", [3, None, -7, 2**62]),
        ("bigint", [0, 1, 2]),
        ("numeric", [Decimal("0.000000001"), None, Decimal("-12.5")]),
        ("timestamptz", [datetime(2026, 3, 29, 1, 30, tzinfo=UTC), None]),
        ("date", [date(2026, 12, 31), None, date(2027, 1, 1)]),
    ],
)
def test_other_columns_read_back_as_sent(cast: str, sent: list[Any]) -> None:
    """Each kind of column pgbatch sends as one array literal, missing values included."""
    with pgbatch.cursor() as cur:
        (got,) = pgbatch.fetch(cur, f"SELECT %s::{cast}[]", [pgbatch.array(sent)])[0]
    assert got == sent


def test_a_pipelined_statement_that_fails_rolls_the_transaction_back() -> None:
    """Statements in ``pgbatch.pipeline()`` are sent without waiting for each other: the error
    of one surfaces at the block's end, and the transaction around it (a batch's) is undone,
    the statements that ran before it included. The connection serves the next one."""
    insert = (
        "INSERT INTO catalog_routehour (model_id, provider, hour, requests, errors,"
        " upstream_errors, ttfb, tps) VALUES (%s, 'p', now(), 1, 0, 0, '[]', '[]')"
    )
    with pytest.raises(psycopg.errors.DivisionByZero), transaction.atomic():
        with pgbatch.cursor() as cur, pgbatch.pipeline():
            pgbatch.execute(cur, insert, ["pipelined"])
            pgbatch.execute(cur, "SELECT 1 / %s::integer", [0])
    assert not RouteHour.objects.filter(model_id="pipelined").exists()
    with transaction.atomic(), pgbatch.cursor() as cur, pgbatch.pipeline():
        pgbatch.execute(cur, insert, ["pipelined"])
        pgbatch.execute(cur, insert, ["pipelined too"])
    assert RouteHour.objects.filter(model_id__startswith="pipelined").count() == 2


def test_duplicates_and_redeliveries_count_once(make_user: Any) -> None:
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    credit(alice, 10)
    credit(bob, 5)
    alice_key, bob_key = _key(alice), _key(bob)
    a = [_event(alice, alice_key, n, f"0.00012345{n}") for n in range(1, 6)]
    b = [_event(bob, bob_key, n, "0.000000001") for n in range(1, 4)]
    free = _event(bob, bob_key, 9, "0", status="error")
    batch = [a[0], b[0], a[1], a[0], b[1], a[2], b[0], free]  # a[0] and b[0] twice
    _unposted(alice, a)
    _unposted(bob, [*b, free])

    assert usage.record_batch(batch) == 6
    assert usage.record_batch(batch) == 0  # a redelivery
    # A later batch that carries requests recorded before with new ones: only the new count.
    assert usage.record_batch([a[2], a[3], b[1], b[2], a[4], a[3]]) == 3
    assert usage.record_batch([*a, *b, free]) == 0

    assert UsageEvent.objects.count() == 9
    alice_cost = sum(Decimal(e["cost"]) for e in a)
    bob_cost = sum(Decimal(e["cost"]) for e in b)
    # One debit per account and batch that brought something new and costly, exact.
    first = Decimal(a[0]["cost"]) + Decimal(a[1]["cost"]) + Decimal(a[2]["cost"])
    assert _ledger(alice) == [
        (1, "adjustment", Decimal(10), Decimal(10)),
        (2, "usage", -first, 10 - first),
        (3, "usage", first - alice_cost, 10 - alice_cost),
    ]
    assert _ledger(bob) == [
        (1, "adjustment", Decimal(5), Decimal(5)),
        (2, "usage", Decimal("-0.000000002"), Decimal("4.999999998")),
        (3, "usage", Decimal("-0.000000001"), Decimal("4.999999997")),
    ]
    assert LedgerEntry.objects.get(account=bob.account, seq=3).reference == "usage:1 requests"
    # Each row names the debit that charged it (a free one none).
    for event in UsageEvent.objects.select_related("ledger_entry"):
        if event.cost:
            assert event.ledger_entry is not None
            assert event.ledger_entry.account_id == event.account_id
            assert event.ledger_entry.kind == "usage"
        else:
            assert event.ledger_entry_id is None
    assert UsageEvent.objects.get(request_id=a[0]["request_id"]).ledger_entry.seq == 2
    assert UsageEvent.objects.get(request_id=a[4]["request_id"]).ledger_entry.seq == 3

    # The rollups: each request once.
    for model in (HourlyUsage, DailyUsage):
        totals = model.objects.filter(account=alice.account).aggregate(
            requests=Sum("requests"), cost=Sum("cost"), prompt=Sum("prompt_tokens")
        )
        assert totals == {
            "requests": 5,
            "cost": alice_cost,
            "prompt": sum(e["prompt_tokens"] for e in a),
        }
        totals = model.objects.filter(account=bob.account).aggregate(
            requests=Sum("requests"), errors=Sum("errors"), cost=Sum("cost")
        )
        assert totals == {"requests": 4, "errors": 1, "cost": bob_cost}
    # The route's figures too (the free request was an error, and is counted as one).
    routes = RouteHour.objects.filter(model_id="mistral-small", provider="mistral")
    assert routes.aggregate(n=Sum("requests"), e=Sum("errors")) == {"n": 9, "e": 1}
    assert sum(sum(row.ttfb) for row in routes) == 8  # the streamed answers that went well

    # Redis: nothing left unposted, and the newest balance posted.
    for user, balance in ((alice, 10 - alice_cost), (bob, 5 - bob_cost)):
        r = client()
        assert r.hlen(state.account_unposted(user.account.pk)) == 0
        figures = r.hmget(state.account(user.account.pk), ["posted", "unposted", "seq"])
        assert figures == [str(to_nanos(balance)), "0", "3"]


def test_a_redelivery_still_clears_what_redis_holds_unposted(make_user: Any) -> None:
    """A worker that died between its commit and the Redis write: the redelivered batch
    records nothing and debits nothing, and Redis forgets the requests all the same."""
    alice = make_user("alice@example.com")
    credit(alice, 10)
    key = _key(alice)
    batch = [_event(alice, key, n, "0.01") for n in range(1, 4)]
    assert usage.record_batch(batch) == 3
    _unposted(alice, batch)  # as if the first write to Redis had been lost
    client().hset(state.account(alice.account.pk), mapping={"seq": 1, "posted": 10 * 10**9})
    assert usage.record_batch(list(reversed(batch))) == 0
    assert [entry[0] for entry in _ledger(alice)] == [1, 2]
    r = client()
    assert r.hlen(state.account_unposted(alice.account.pk)) == 0
    assert r.hmget(state.account(alice.account.pk), ["posted", "unposted", "seq"]) == [
        str(to_nanos(Decimal("9.97"))),
        "0",
        "2",
    ]


def test_a_deleted_key_and_an_unknown_account(make_user: Any) -> None:
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    credit(alice, 10)
    key = _key(alice, "old")
    gone = key.pk
    key.delete()  # deleted before its events arrived
    kept = _key(bob)
    stranger = {**_event(bob, kept, 7, "0.5"), "account": 999_999, "request_id": "req-nobody"}
    batch = [
        _event(alice, gone, 1, "0.25"),
        stranger,
        _event(bob, kept, 1, "0"),
        _event(alice, gone, 2, "0.5"),
    ]
    assert usage.record_batch(batch) == 3
    assert not UsageEvent.objects.filter(request_id="req-nobody").exists()
    mine = UsageEvent.objects.filter(account=alice.account)
    assert set(mine.values_list("key_id", flat=True)) == {None}
    assert _ledger(alice)[-1][2:] == (Decimal("-0.75"), Decimal("9.25"))  # still billed
    hourly = HourlyUsage.objects.get(account=alice.account)
    assert (hourly.key_id, hourly.requests, hourly.cost) == (None, 2, Decimal("0.75"))
    assert HourlyUsage.objects.get(account=bob.account).key_id == kept.pk
    # Bob's free request: recorded, no debit, his key's last use noted.
    assert [entry[1] for entry in _ledger(bob)] == []
    kept.refresh_from_db()
    assert kept.last_used_at is not None
    # The dropped account's request is not in the route figures either.
    assert RouteHour.objects.aggregate(n=Sum("requests"))["n"] == 3


def test_two_workers_on_one_batch_record_it_once(make_user: Any) -> None:
    """A batch delivered to two workers at once (a redelivery while the first still works):
    the accounts' locks and the unique constraint leave each request recorded, debited and
    rolled up once."""
    users = [make_user(f"user{i}@example.com") for i in range(3)]
    events = []
    for user in users:
        credit(user, 1)
        key = _key(user)
        events += [_event(user, key, n, "0.001") for n in range(1, 21)]
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(batch: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            results.append(usage.record_batch(batch))
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=work, args=(events,)),
        threading.Thread(target=work, args=(list(reversed(events)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == [0, 60]
    assert UsageEvent.objects.count() == 60
    for user in users:
        assert [entry[2] for entry in _ledger(user)] == [Decimal(1), Decimal("-0.020")]
        assert HourlyUsage.objects.filter(account=user.account).aggregate(n=Sum("requests")) == {
            "n": 20
        }


def test_statements_are_prepared_once_per_connection(make_user: Any) -> None:
    """The batch's statements are prepared on the connection and then reused."""
    alice = make_user("alice@example.com")
    credit(alice, 10)
    key = _key(alice)
    for round_ in range(4):
        usage.record_batch([_event(alice, key, 100 * round_ + n, "0.001") for n in range(5)])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["WITH fresh AS (INSERT INTO billing_usageevent%"],
        )
        (prepared,) = cursor.fetchone()
    assert prepared == 1
