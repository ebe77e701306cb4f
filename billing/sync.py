"""Writes the ledger's figures into the relay's view in Redis (balance protocol, DESIGN.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from core import state
from core.pricing import to_nanos
from lib.redis import client, script


def post(
    account_id: int, *, seq: int, balance: Decimal | None, request_ids: Iterable[str] = ()
) -> None:
    """Write ``balance`` at ledger ``seq`` unless Redis already has a newer one, and forget the
    unposted costs of requests now in the ledger. Repeating it is harmless."""
    ids = list(request_ids)
    script(state.POST_MANY)(
        keys=[state.account(account_id), state.account_unposted(account_id)],
        args=[seq, to_nanos(balance or Decimal(0)), len(ids), *ids],
    )


@dataclass(frozen=True, slots=True)
class Posting:
    """One account's figures for ``post_many``: as for ``post``."""

    account_id: int
    seq: int
    balance: Decimal | None
    request_ids: Sequence[str] = ()


def post_many(postings: Iterable[Posting]) -> None:
    """``post`` for many accounts at once (the usage worker's batch): one script call for them
    all (``state.POST_MANY``; a pipeline of one call per account cost the worker twice the
    time). On a Redis Cluster, where the accounts' keys sit in many slots and a script may
    touch one, each account's goes on its own."""
    postings = list(postings)
    if not postings:
        return
    if settings.TP_REDIS_CLUSTER:
        for p in postings:
            post(p.account_id, seq=p.seq, balance=p.balance, request_ids=p.request_ids)
        return
    keys: list[str] = []
    args: list[str | int] = []
    for p in postings:
        keys += (state.account(p.account_id), state.account_unposted(p.account_id))
        args += (p.seq, to_nanos(p.balance or Decimal(0)), len(p.request_ids), *p.request_ids)
    script(state.POST_MANY)(keys=keys, args=args)


def force(account_id: int, *, seq: int, balance: Decimal) -> None:
    """Rebuild: overwrite the posted figure whatever Redis holds (``syncredis``)."""
    client().hset(state.account(account_id), mapping={"seq": seq, "posted": to_nanos(balance)})


def figures(account_id: int) -> dict[str, int]:
    """Nano-dollar figures as the relay sees them: posted, held, unposted."""
    raw = client().hmget(state.account(account_id), ["posted", "held", "unposted"])
    posted, held, unposted = (int(v) if v is not None else 0 for v in raw)
    return {"posted": posted, "held": held, "unposted": unposted}


def release_stale_holds(max_age_seconds: int, now: float) -> int:
    """Drop holds of requests that never settled (a relay died mid-request)."""
    r = client()
    released = 0
    for times in r.scan_iter(match=state.HOLD_TIMES_PATTERN, count=1000):
        account_id = state.account_of_hold_times(times)
        for request_id in r.zrangebyscore(times, "-inf", now - max_age_seconds):
            value = str(r.hget(state.account_holds(account_id), str(request_id)) or "")
            key_cap, member_cap = state.cap_keys_of_hold(value)
            script(state.RELEASE)(
                keys=[
                    state.account(account_id),
                    state.account_holds(account_id),
                    times,
                    key_cap or state.no_cap(account_id),
                    member_cap or state.no_cap(account_id),
                ],
                args=[str(request_id)],
            )
            released += 1
    return released
