"""Writes the ledger's figures into the relay's view in Redis (balance protocol, DESIGN.md)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from core import state
from core.pricing import to_nanos
from lib.redis import client, script


def post(
    account_id: int, *, seq: int, balance: Decimal | None, request_ids: Iterable[str] = ()
) -> None:
    """Write ``balance`` at ledger ``seq`` unless Redis already has a newer one, and forget the
    unposted costs of requests now in the ledger. Repeating it is harmless."""
    nanos = to_nanos(balance or Decimal(0))
    script(state.POST)(
        keys=[state.account(account_id), state.account_unposted(account_id)],
        args=[seq, nanos, *request_ids],
    )


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
            script(state.RELEASE)(
                keys=[
                    state.account(account_id),
                    state.account_holds(account_id),
                    times,
                    state.cap_key_of_hold(value) or state.no_cap(account_id),
                ],
                args=[str(request_id)],
            )
            released += 1
    return released
