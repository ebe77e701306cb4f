"""Recording usage events from the relay: idempotent on the request id, one ledger debit per
account per batch, rollups in the same transaction. Afterwards it announces the debit
(``signals.debited``), on which the balance alerts act."""

from __future__ import annotations

import logging
import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from catalog.models import PriceVersion
from core import byok
from core.pricing import HUNDRED, Price, cost
from keys.models import ApiKey
from lib import pgbatch

from . import ledger, partitions, rollups, routestats, signals, sync
from .models import LedgerEntry, UsageEvent

log = logging.getLogger(__name__)

STATUSES = {choice.value for choice in UsageEvent.Status}


# Not frozen: a frozen dataclass sets each of its 30 fields through object.__setattr__, a
# tenth of a batch's Python time; nothing changes an event once parsed.
@dataclass(slots=True)
class Event:
    request_id: str
    account: int
    key: int
    model: str
    provider: str
    upstream_model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    images: int
    audio_ms: int
    cost: Decimal
    hold: Decimal | None  # the most this request may be charged
    price_version: int | None
    estimated: bool
    status: str
    http_status: int
    streamed: bool
    finish_reason: str
    byok: bool
    # A BYOK request's fee, per cent of the list price, as the relay charged it.
    fee_percent: Decimal
    started_at: datetime
    duration_ms: int
    ttfb_ms: int | None
    client_net: str

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Event:
        status = str(raw.get("status", "ok"))
        ttfb = raw.get("ttfb_ms")
        return cls(
            request_id=str(raw["request_id"])[:64],
            account=int(raw["account"]),
            key=int(raw["key"]),
            model=str(raw["model"])[:150],
            provider=str(raw.get("provider", ""))[:50],
            upstream_model=str(raw.get("upstream_model", ""))[:150],
            prompt_tokens=max(0, int(raw.get("prompt_tokens", 0))),
            completion_tokens=max(0, int(raw.get("completion_tokens", 0))),
            cached_tokens=max(0, int(raw.get("cached_tokens", 0))),
            # (not in events spooled before they were counted: 0)
            cache_write_tokens=max(0, int(raw.get("cache_write_tokens", 0))),
            cache_write_1h_tokens=max(0, int(raw.get("cache_write_1h_tokens", 0))),
            reasoning_tokens=max(0, int(raw.get("reasoning_tokens", 0))),
            input_audio_tokens=max(0, int(raw.get("input_audio_tokens", 0))),
            output_audio_tokens=max(0, int(raw.get("output_audio_tokens", 0))),
            images=max(0, int(raw.get("images", 0))),
            audio_ms=max(0, int(raw.get("audio_ms", 0))),
            cost=Decimal(str(raw.get("cost", "0"))),
            hold=Decimal(str(raw["hold"])) if raw.get("hold") is not None else None,
            price_version=int(raw["price_version"]) if raw.get("price_version") else None,
            estimated=bool(raw.get("estimated", False)),
            status=status if status in STATUSES else UsageEvent.Status.ERROR,
            http_status=int(raw.get("http_status", 200)),
            streamed=bool(raw.get("streamed", False)),
            # (not in events spooled by a relay that did not report it: "")
            finish_reason=str(raw.get("finish_reason") or "")[:32],
            byok=bool(raw.get("byok", False)),
            fee_percent=byok.fee_percent(str(raw.get("fee_percent") or ""))
            if raw.get("byok")
            else HUNDRED,
            started_at=datetime.fromtimestamp(float(raw["started_at"]), tz=UTC),
            duration_ms=max(0, int(raw.get("duration_ms", 0))),
            ttfb_ms=int(ttfb) if ttfb is not None else None,
            client_net=str(raw.get("client_net") or "")[:64],
        )


_PRICES = (
    f"SELECT model_id, version, {', '.join(PriceVersion.PRICE_FIELDS)}"  # noqa: S608 - names
    f" FROM {PriceVersion._meta.db_table}"
    " WHERE model_id = ANY(%s::varchar[]) AND version = ANY(%s::integer[])"
)


def _wanted(events: list[Event]) -> tuple[list[str], list[int]]:
    """The models and price versions the batch's events were charged at (``_PRICES``)."""
    wanted = {(e.model, e.price_version) for e in events if e.price_version}
    return sorted({m for m, _ in wanted}), sorted({v for _, v in wanted})


def _prices_of(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[str, int], Price]:
    """``_PRICES``'s rows, by (model, version)."""
    prices: dict[tuple[str, int], Price] = {}
    for model_id, version, *values in rows:
        fields = dict(zip(PriceVersion.PRICE_FIELDS, values, strict=True))
        prices[(model_id, version)] = PriceVersion.price_of(version, fields)
    return prices


def _prices_orm(events: list[Event]) -> dict[tuple[str, int], Price]:
    models_, versions = _wanted(events)
    if not models_:
        return {}
    rows = PriceVersion.objects.filter(model_id__in=models_, version__in=versions)
    return {(row.model_id, row.version): row.as_price() for row in rows}


def _priced(
    events: list[Event], prices: dict[tuple[str, int], Price]
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """What each request is charged, and what its usage came to above its hold (unbilled).

    The worker computes each cost again with the same function from the price version the
    relay charged at (``prices``: the relay's figure is kept only if that version is unknown
    here), and charges at most the request's hold, as the relay settled it: an upstream that
    reports more than the hold allowed never takes a balance below zero."""
    charged: dict[str, Decimal] = {}
    unbilled: dict[str, Decimal] = {}
    for e in events:
        price = prices.get((e.model, e.price_version or 0))
        if price is None or e.cost == 0:
            # A failed request costs nothing whatever its counts say.
            full = e.cost
        else:
            full = cost(
                price,
                prompt_tokens=e.prompt_tokens,
                completion_tokens=e.completion_tokens,
                cached_tokens=e.cached_tokens,
                cache_write_tokens=e.cache_write_tokens,
                cache_write_1h_tokens=e.cache_write_1h_tokens,
                reasoning_tokens=e.reasoning_tokens,
                input_audio_tokens=e.input_audio_tokens,
                output_audio_tokens=e.output_audio_tokens,
                images=e.images,
                audio_ms=e.audio_ms,
                percent=e.fee_percent,
            )
        billed = full if e.hold is None else min(full, e.hold)
        charged[e.request_id] = billed
        unbilled[e.request_id] = full - billed
        if full > billed:
            log.warning(
                "usage of %s (%s via %s) came to %s, above its hold of %s: %s not charged",
                e.request_id,
                e.model,
                e.provider,
                full,
                e.hold,
                full - billed,
            )
    return charged, unbilled


def record_batch(raw_events: list[dict[str, Any]]) -> int:
    """Record what is new in the batch and debit it; returns how many events were new.

    Repeating a batch (a redelivery, a replayed spool) records nothing twice and still tells
    Redis that every request in it is posted, so a crash between commit and that write heals.
    An event older than the raw events' retention is not recorded: its first copy may have
    been dropped, and recording it again would bill it twice.
    """
    raw_events, failed = routestats.split(raw_events)
    events: list[Event] = []
    for raw in raw_events:
        try:
            events.append(Event.parse(raw))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            log.error("dropping malformed usage event %r", raw.get("request_id"))
    if not events and not failed:
        return 0
    # Each request once (its first copy in the batch), and every request id of each account,
    # whose unposted cost Redis forgets once the batch is in.
    unique: dict[str, Event] = {}
    by_account: dict[int, list[str]] = defaultdict(list)
    for e in events:
        if e.request_id not in unique:
            unique[e.request_id] = e
            by_account[e.account].append(e.request_id)
    record = _record_postgresql if pgbatch.available() else _record_portable
    created = record(list(unique.values()), by_account, raw_events, failed)
    if created:
        signals.debited.send(sender=UsageEvent, account_ids=list(by_account))
    return created


def _stale(events: list[Event]) -> list[Event]:
    """The events older than the raw events' retention (never recorded: module docstring)."""
    horizon = partitions.retention_horizon()
    return [e for e in events if e.started_at < horizon] if horizon is not None else []


def _log_stale(stale: list[Event], existing: set[str]) -> None:
    count = sum(1 for e in stale if e.request_id not in existing)
    if count:
        log.error(
            "%d usage events older than the retention of raw events (%s) not recorded",
            count,
            partitions.retention_horizon(),
        )


def _log_missing(by_account: dict[int, list[str]], locked: set[int]) -> set[str]:
    """Logs the accounts of the batch that do not exist; returns their request ids."""
    missing = set(by_account) - locked
    if missing:
        log.error("usage events for unknown accounts %s dropped", sorted(missing))
    return {rid for account_id in missing for rid in by_account[account_id]}


# ---- PostgreSQL: a few prepared statements for the whole batch (lib.pgbatch) ----------------

# The accounts' row locks, in id order, and a ledger entry id drawn ahead for each account
# (its events' rows name their debit, inserted after them in the same transaction; an id drawn
# for an account that the batch does not debit, its events free or recorded before, is left
# unused: a gap in the ids, which nothing reads).
_LOCK = (
    "SELECT id, nextval((SELECT pg_get_serial_sequence('billing_ledgerentry', 'id'))::regclass)"
    " FROM accounts_account WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE"
)
# Each account's newest entry, read under its lock (one index probe per account; sent right
# after _LOCK, it starts once the locks are held, and on READ COMMITTED each statement sees
# what was committed when it started), and which of the batch's keys exist (rows of a key:
# false and no seq). An account that does not exist has no row.
_LAST = (
    "SELECT true, a.id, l.seq, l.balance_after FROM unnest(%s::bigint[]) AS a(id)"
    " CROSS JOIN LATERAL (SELECT seq, balance_after FROM billing_ledgerentry e"
    " WHERE e.account_id = a.id ORDER BY seq DESC LIMIT 1) AS l"
    " UNION ALL SELECT false, id, NULL, NULL FROM keys_apikey WHERE id = ANY(%s::bigint[])"
)
_COLUMNS = (
    "request_id",
    "account_id",
    "key_id",
    "model_id",
    "provider",
    "upstream_model",
    *UsageEvent.RESULT,
    "started_at",
    "ledger_entry_id",
)

_counts = operator.attrgetter(*UsageEvent.COUNTS)
_outcome = operator.attrgetter(*UsageEvent.OUTCOME)
_TYPES = {
    "request_id": "varchar",
    "model_id": "varchar",
    "provider": "varchar",
    "upstream_model": "varchar",
    "status": "varchar",
    "finish_reason": "varchar",
    "cost": "numeric",
    "unbilled": "numeric",
    "estimated": "boolean",
    "streamed": "boolean",
    "byok": "boolean",
    "started_at": "timestamptz",
}
_ARRAYS = [f"%s::{_TYPES.get(column, 'bigint')}[]" for column in _COLUMNS]
# The new events: the unique (request_id, started_at) constraint decides what is new, and
# RETURNING says which rows went in; only those are debited, rolled up and counted. The same
# statement adds them to the hourly and daily rollups, summed in the database from the rows
# it inserted (billing.rollups.upserts_from): nothing to group in Python, nothing sent twice.
# The batch's one recording time goes once (the first parameter), not as a column of copies.
_HOURLY, _DAILY = rollups.upserts_from("fresh")
_INSERT = (
    "WITH fresh AS ("  # noqa: S608 (constant names)
    f"INSERT INTO billing_usageevent ({', '.join(_COLUMNS)}, recorded_at)"
    f" SELECT *, %s::timestamptz FROM unnest({', '.join(_ARRAYS)})"
    " ON CONFLICT (request_id, started_at) DO NOTHING"
    f" RETURNING request_id, {', '.join(rollups.EVENT_COLUMNS)}),"
    f" hourly AS ({_HOURLY}), daily AS ({_DAILY})"
    " SELECT request_id FROM fresh"
)
_LEDGER = (
    "INSERT INTO billing_ledgerentry"
    " (id, account_id, seq, kind, amount, balance_after, reference, note, created_at)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[],"
    " %s::numeric[], %s::numeric[], %s::varchar[], %s::varchar[], %s::timestamptz[])"
)
_TOUCH = (
    "UPDATE keys_apikey AS k SET last_used_at = v.at, last_used_from = v.net"
    " FROM unnest(%s::bigint[], %s::timestamptz[], %s::varchar[]) AS v(id, at, net)"
    " WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)"
)


def _row(
    e: Event,
    amount: Decimal,
    unbilled: Decimal,
    key_known: bool,
    ledger_entry: int | None,
) -> tuple[Any, ...]:
    """An event's row, in the order of ``_COLUMNS`` (an unknown key is recorded as none)."""
    return (
        e.request_id,
        e.account,
        e.key if key_known else None,
        e.model,
        e.provider,
        e.upstream_model,
        *_counts(e),
        amount,
        unbilled,
        *_outcome(e),
        e.duration_ms,
        e.ttfb_ms,
        e.started_at,
        ledger_entry if amount > 0 else None,
    )


def _record_postgresql(
    events: list[Event],
    by_account: dict[int, list[str]],
    raw_events: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> int:
    """The batch in one transaction of a few prepared statements, one per table (module
    ``lib.pgbatch``), pipelined (``pgbatch.pipeline``) into three round trips after BEGIN: the
    prices, the accounts' locks, their newest ledger entries and the keys; the events with
    their rollups; the debits, the route figures and the keys' last use."""
    stale = _stale(events)
    now = timezone.now()
    accounts = sorted(by_account)
    models_, versions = _wanted(events)
    pgbatch.check_health()  # (before the transaction: a dropped connection is replaced first)
    with (
        transaction.atomic(),
        pgbatch.pipeline(),
        pgbatch.cursor() as cur,
        pgbatch.cursor() as locks,
        pgbatch.cursor() as newest,
    ):
        if models_:
            pgbatch.execute(cur, _PRICES, [models_, versions])
        # Locking accounts in id order serialises batches for one account (so its newest
        # ledger entry, read next, stays the newest until commit), and cannot deadlock.
        pgbatch.execute(locks, _LOCK, [accounts])
        pgbatch.execute(newest, _LAST, [accounts, sorted({e.key for e in events})])
        costs, unbilled = _priced(events, _prices_of(cur.fetchall()) if models_ else {})
        ids = {a: i for a, i in locks.fetchall()}
        last: dict[int, tuple[int, Decimal]] = {}
        known_keys: set[int] = set()
        for of_account, pk, seq, balance in newest.fetchall():
            if of_account:
                last[pk] = (seq, balance)
            else:
                known_keys.add(pk)
        _log_missing(by_account, set(ids))
        refused = {e.request_id for e in stale}
        rows = [
            _row(
                e,
                costs[e.request_id],
                unbilled[e.request_id],
                e.key in known_keys,
                ids[e.account],
            )
            for e in events
            if e.account in ids and e.request_id not in refused
        ]
        inserted = (
            {
                rid
                for (rid,) in pgbatch.fetch(
                    cur, _INSERT, [now, *pgbatch.columns(rows, len(_COLUMNS))]
                )
            }
            if rows
            else set()
        )
        if stale:
            _log_stale(stale, _recorded(stale))
        fresh = [e for e in events if e.request_id in inserted]
        totals: dict[int, Decimal] = defaultdict(Decimal)
        counts: dict[int, int] = defaultdict(int)
        for e in fresh:
            totals[e.account] += costs[e.request_id]
            counts[e.account] += 1
        entries = []
        postings = []
        for account_id in sorted(ids):
            seq, balance = last.get(account_id, (0, Decimal(0)))
            total = totals.get(account_id, Decimal(0))
            if total > 0:
                # (The same rules as ledger.post_entry: the next seq, the running balance.)
                seq, balance = seq + 1, balance - total
                entries.append(
                    (
                        ids[account_id],
                        account_id,
                        seq,
                        LedgerEntry.Kind.USAGE.value,
                        -total,
                        balance,
                        f"usage:{counts[account_id]} requests"[:200],
                        "",
                        now,
                    )
                )
            postings.append(sync.Posting(account_id, seq, balance, by_account[account_id]))
        # The debits, the keys' last use and the route figures read nothing back: they go
        # together as the pipeline ends, one round trip (the server works on the first while
        # the rest are built).
        if entries:
            pgbatch.execute(cur, _LEDGER, pgbatch.columns(entries, 9))
        _touch_keys(fresh)
        # Events not recorded now don't count in the routes' figures either (nor twice if
        # resent); failed requests have no row and always count.
        usage_ids = {str(raw.get("request_id", ""))[:64] for raw in raw_events}
        routestats.record([*raw_events, *failed], already=usage_ids - inserted)
        # After commit, Redis learns every locked account's newest figures (if a newer entry
        # was posted since, it keeps that one) and forgets the batch's unposted costs.
        transaction.on_commit(lambda: sync.post_many(postings), robust=True)
    return len(inserted)


# ---- Elsewhere (SQLite in development): the ORM, simple and obviously right -----------------


def _record_portable(
    events: list[Event],
    by_account: dict[int, list[str]],
    raw_events: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> int:
    costs, unbilled = _priced(events, _prices_orm(events))
    now = timezone.now()
    to_post: list[sync.Posting] = []
    with transaction.atomic():
        # Locking accounts in id order serialises batches for one account, which makes the
        # "already recorded?" check below race-free, and cannot deadlock.
        locked = list(
            Account.objects.select_for_update()
            .filter(pk__in=list(by_account))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        known_keys = set(
            ApiKey.objects.filter(pk__in={e.key for e in events}).values_list("pk", flat=True)
        )
        existing = _recorded(events)
        stale = _stale(events)
        _log_stale(stale, existing)
        refused = existing | {e.request_id for e in stale}
        dropped = _log_missing(by_account, set(locked))
        last = ledger.last_entries(locked)
        fresh = [e for e in events if e.account in set(locked) and e.request_id not in refused]
        debits: dict[int, tuple[Decimal, str, list[str]]] = {}
        for account_id in locked:
            mine = [e for e in fresh if e.account == account_id]
            total = sum((costs[e.request_id] for e in mine), Decimal(0))
            if total > 0:
                debits[account_id] = (
                    -total,
                    f"usage:{len(mine)} requests",
                    by_account[account_id],
                )
            else:
                previous = last.get(account_id)
                to_post.append(
                    sync.Posting(
                        account_id,
                        previous.seq if previous else 0,
                        previous.balance_after if previous else Decimal(0),
                        by_account[account_id],
                    )
                )
        entries = ledger.post_usage_debits(debits, last) if debits else {}
        UsageEvent.objects.bulk_create(
            [
                UsageEvent(
                    **dict(
                        zip(
                            _COLUMNS,
                            _row(
                                e,
                                costs[e.request_id],
                                unbilled[e.request_id],
                                e.key in known_keys,
                                entries[e.account].pk if e.account in entries else None,
                            ),
                            strict=True,
                        )
                    ),
                    recorded_at=now,
                )
                for e in fresh
            ]
        )
        _rollup(fresh, costs, known_keys)
        _touch_keys(fresh)
        routestats.record([*raw_events, *failed], already=refused | dropped)
    # (Read under the lock: if a newer entry was posted since, Redis keeps the newer figure.)
    sync.post_many(to_post)
    return len(fresh)


def _recorded(events: list[Event]) -> set[str]:
    """Request ids of the batch recorded before. A request is (request_id, started_at), the
    relay's stamp that every copy of its event carries, so the search is bounded by the batch's
    times and PostgreSQL reads only the partitions of those months."""
    if not events:
        return set()
    return set(
        UsageEvent.objects.filter(
            request_id__in=[e.request_id for e in events],
            started_at__gte=min(e.started_at for e in events),
            started_at__lte=max(e.started_at for e in events),
        ).values_list("request_id", flat=True)
    )


def _rollup(events: list[Event], costs: dict[str, Decimal], known_keys: set[int]) -> None:
    """The hourly and daily rollups of the new events (an unknown key counts as no key, as in
    the event's row)."""
    if not events:
        return
    hourly, daily = rollups.group(
        (
            e.account,
            e.started_at,
            e.key if e.key in known_keys else None,
            e.model,
            e.provider,
            rollups.figures_of(e, costs[e.request_id]),
        )
        for e in events
    )
    rollups.add(hourly, daily)


def _touch_keys(events: list[Event]) -> None:
    """Each key's last use: when, and from which coarse network (the relay sends a /24 or
    /48, never the address). On PostgreSQL one statement for the batch's keys."""
    latest: dict[int, Event] = {}
    for e in events:
        if e.key not in latest or e.started_at > latest[e.key].started_at:
            latest[e.key] = e
    if not latest:
        return
    if pgbatch.available():
        rows = [(key_id, e.started_at, e.client_net) for key_id, e in sorted(latest.items())]
        with pgbatch.cursor() as cur:
            pgbatch.execute(cur, _TOUCH, pgbatch.columns(rows, 3))
        return
    for key_id, e in latest.items():
        ApiKey.objects.filter(pk=key_id).exclude(last_used_at__gte=e.started_at).update(
            last_used_at=e.started_at, last_used_from=e.client_net
        )
