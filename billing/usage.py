"""Recording usage events from the relay: idempotent on the request id, one ledger debit per
account per batch, rollups in the same transaction. Afterwards it announces the debit
(``signals.debited``), on which the balance alerts act."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Account
from catalog.models import PriceVersion
from core.pricing import Price, cost
from keys.models import ApiKey

from . import ledger, partitions, rollups, routestats, signals, sync
from .models import LedgerEntry, UsageEvent

log = logging.getLogger(__name__)

STATUSES = {choice.value for choice in UsageEvent.Status}


@dataclass(frozen=True, slots=True)
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
            started_at=datetime.fromtimestamp(float(raw["started_at"]), tz=UTC),
            duration_ms=max(0, int(raw.get("duration_ms", 0))),
            ttfb_ms=int(ttfb) if ttfb is not None else None,
            client_net=str(raw.get("client_net") or "")[:64],
        )


def _priced(events: list[Event]) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """What each request is charged, and what its usage came to above its hold (unbilled).

    The worker computes each cost again with the same function from the price version the
    relay charged at (the relay's figure is kept only if that version is unknown here), and
    charges at most the request's hold, as the relay settled it: an upstream that reports more
    than the hold allowed never takes a balance below zero."""
    wanted = {(e.model, e.price_version) for e in events if e.price_version}
    prices: dict[tuple[str, int], Price] = {}
    if wanted:
        rows = PriceVersion.objects.filter(
            model_id__in={m for m, _ in wanted}, version__in={v for _, v in wanted}
        )
        for row in rows:
            prices[(row.model_id, row.version)] = row.as_price()
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
    by_account: dict[int, dict[str, Event]] = defaultdict(dict)
    for e in events:
        by_account[e.account].setdefault(e.request_id, e)
    costs, unbilled = _priced(events)
    created = 0
    to_post: list[tuple[int, LedgerEntry | None, list[str]]] = []
    with transaction.atomic():
        # Locking accounts in id order serialises batches for one account, which makes the
        # "already recorded?" check below race-free, and cannot deadlock.
        accounts = list(
            Account.objects.select_for_update().filter(pk__in=by_account).order_by("pk")
        )
        known_keys = set(
            ApiKey.objects.filter(pk__in={e.key for e in events}).values_list("pk", flat=True)
        )
        existing = _recorded(events)
        horizon = partitions.retention_horizon()
        stale = (
            {e.request_id for e in events if e.started_at < horizon} - existing
            if horizon is not None
            else set()
        )
        if stale:
            log.error(
                "%d usage events older than the retention of raw events (%s) not recorded",
                len(stale),
                horizon,
            )
        # Every account's debit, events and rollups in a few statements for the whole batch
        # (a batch from the relays mixes many accounts).
        last = ledger.last_entries(a.pk for a in accounts)
        debits: dict[int, tuple[Decimal, str, list[str]]] = {}
        new: list[Event] = []
        for account in accounts:
            batch = by_account[account.pk]
            fresh = [e for rid, e in batch.items() if rid not in existing and rid not in stale]
            total = sum((costs[e.request_id] for e in fresh), Decimal(0))
            if total > 0:
                debits[account.pk] = (-total, f"usage:{len(fresh)} requests", list(batch))
            else:
                previous = last.get(account.pk)
                to_post.append((account.pk, previous, list(batch)))
            new += fresh
        entries = ledger.post_usage_debits(debits, last) if debits else {}
        _insert(new, costs, unbilled, entries, known_keys)
        _rollup(new, costs, known_keys)
        _touch_keys(new)
        created = len(new)
        missing = set(by_account) - {a.pk for a in accounts}
        if missing:
            log.error("usage events for unknown accounts %s dropped", sorted(missing))
        # Events dropped above don't count in the routes' figures either (nor twice if resent).
        dropped = {rid for account_id in missing for rid in by_account[account_id]}
        routestats.record([*raw_events, *failed], already=existing | dropped | stale)
    # (Read under the lock: if a newer entry was posted since, Redis keeps the newer figure.)
    for account_id, previous, request_ids in to_post:
        sync.post(
            account_id,
            seq=previous.seq if previous else 0,
            balance=previous.balance_after if previous else Decimal(0),
            request_ids=request_ids,
        )
    if created:
        signals.debited.send(sender=UsageEvent, account_ids=list(by_account))
    return created


_COLUMNS = (
    "request_id",
    "account_id",
    "key_id",
    "model_id",
    "provider",
    "upstream_model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "images",
    "audio_ms",
    "cost",
    "unbilled",
    "price_version",
    "estimated",
    "status",
    "http_status",
    "streamed",
    "finish_reason",
    "started_at",
    "duration_ms",
    "ttfb_ms",
    "ledger_entry_id",
    "recorded_at",
)


def _insert(
    events: list[Event],
    costs: dict[str, Decimal],
    unbilled: dict[str, Decimal],
    entries: dict[int, LedgerEntry],
    known_keys: set[int],
) -> None:
    """The new rows in one COPY: on PostgreSQL the cheapest way in, for the worker's CPU and
    the database's (the batch is already checked for rows recorded before, under the account's
    lock, so nothing here can conflict). Elsewhere (SQLite in development), bulk_create."""
    if not events:
        return
    now = timezone.now()
    rows = [
        (
            e.request_id,
            e.account,
            e.key if e.key in known_keys else None,
            e.model,
            e.provider,
            e.upstream_model,
            e.prompt_tokens,
            e.completion_tokens,
            e.cached_tokens,
            e.cache_write_tokens,
            e.cache_write_1h_tokens,
            e.reasoning_tokens,
            e.input_audio_tokens,
            e.output_audio_tokens,
            e.images,
            e.audio_ms,
            amount,
            unbilled[e.request_id],
            e.price_version,
            e.estimated,
            e.status,
            e.http_status,
            e.streamed,
            e.finish_reason,
            e.started_at,
            e.duration_ms,
            e.ttfb_ms,
            entries[e.account].pk if e.account in entries and amount > 0 else None,
            now,
        )
        for e in events
        for amount in (costs[e.request_id],)
    ]
    if connection.vendor != "postgresql":
        UsageEvent.objects.bulk_create(
            [UsageEvent(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]
        )
        return
    table = UsageEvent._meta.db_table
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


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
    if connection.vendor == "postgresql":
        rows = ", ".join(["(%s, %s::timestamptz, %s)"] * len(latest))
        params: list[Any] = []
        for key_id, e in sorted(latest.items()):
            params += [key_id, e.started_at, e.client_net]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE keys_apikey AS k SET last_used_at = v.at, last_used_from = v.net"  # noqa: S608
                f" FROM (VALUES {rows}) AS v(id, at, net) WHERE k.id = v.id"
                " AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
                params,
            )
        return
    for key_id, e in latest.items():
        ApiKey.objects.filter(pk=key_id).exclude(last_used_at__gte=e.started_at).update(
            last_used_at=e.started_at, last_used_from=e.client_net
        )
