"""Compares the ledger, the usage events and Redis. Any difference is drift.

Checked per account: the ledger's running balance equals the sum of its entries without gaps
in its sequence; usage debits equal the recorded usage costs, as the daily rollups hold them
(raw events older than the retention are gone, their rollups stay); the hourly and daily
rollups agree; Redis's posted balance equals the
ledger's; Redis's held and unposted sums equal their per-request entries; no request already
recorded is still counted as unposted; no hold is older than the longest allowed request.
"""

from __future__ import annotations

import time
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Max, Sum

from accounts.models import Account
from core import state
from core.pricing import to_nanos
from lib.redis import client

from .models import DailyUsage, HourlyUsage, LedgerEntry, UsageEvent


def check() -> list[str]:
    problems: list[str] = []
    r = client()
    now = time.time()
    ledger = {
        row["account"]: row
        for row in LedgerEntry.objects.values("account").annotate(
            total=Sum("amount"), entries=Count("id"), last_seq=Max("seq")
        )
    }
    usage_debits = dict(
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE)
        .values("account")
        .annotate(total=Sum("amount"))
        .values_list("account", "total")
    )
    usage_costs = dict(
        DailyUsage.objects.values("account")
        .annotate(total=Sum("cost"))
        .values_list("account", "total")
    )
    hourly_costs = dict(
        HourlyUsage.objects.values("account")
        .annotate(total=Sum("cost"))
        .values_list("account", "total")
    )
    for account_id in Account.objects.values_list("pk", flat=True).iterator():
        row = ledger.get(account_id)
        total = row["total"] if row else Decimal(0)
        last = (
            LedgerEntry.objects.filter(account_id=account_id).order_by("-seq").first()
            if row
            else None
        )
        balance = last.balance_after if last else Decimal(0)
        where = f"account {account_id}"
        if row and row["last_seq"] != row["entries"]:
            problems.append(f"{where}: ledger sequence has gaps")
        if total != balance:
            problems.append(f"{where}: sum of entries {total} != balance {balance}")
        debits = -(usage_debits.get(account_id) or Decimal(0))
        costs = usage_costs.get(account_id) or Decimal(0)
        if debits != costs:
            problems.append(f"{where}: usage debits {debits} != recorded usage cost {costs}")
        hourly = hourly_costs.get(account_id) or Decimal(0)
        if hourly != costs:
            problems.append(f"{where}: hourly usage cost {hourly} != daily usage cost {costs}")

        figures = r.hgetall(state.account(account_id))
        posted = int(figures.get("posted", 0))
        if posted != to_nanos(balance):
            problems.append(
                f"{where}: Redis posted {posted} nanos != ledger {to_nanos(balance)} nanos"
            )
        holds = r.hgetall(state.account_holds(account_id))
        held = sum(int(str(v).partition("|")[0]) for v in holds.values())
        if held != int(figures.get("held", 0)):
            problems.append(f"{where}: Redis held {figures.get('held', 0)} != its holds {held}")
        unposted = r.hgetall(state.account_unposted(account_id))
        if sum(int(v) for v in unposted.values()) != int(figures.get("unposted", 0)):
            problems.append(f"{where}: Redis unposted sum differs from its entries")
        if unposted:
            recorded = UsageEvent.objects.filter(request_id__in=list(unposted)).count()
            if recorded:
                problems.append(f"{where}: {recorded} recorded requests still unposted in Redis")
        stale = r.zcount(
            state.hold_times(account_id), "-inf", now - settings.TP_HOLD_MAX_AGE_SECONDS
        )
        if stale:
            problems.append(f"{where}: {stale} holds older than the longest allowed request")
    return problems
