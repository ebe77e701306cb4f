"""Compares the ledger, the usage events and Redis. Any difference is drift."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from .models import Account, LedgerEntry, UsageEvent
from .pricing import to_nanos
from .sync import figures


def check() -> list[str]:
    problems: list[str] = []
    for account in Account.objects.all().iterator():
        entries = LedgerEntry.objects.filter(account=account)
        total = entries.aggregate(total=Sum("amount"))["total"] or Decimal(0)
        last = entries.order_by("-seq").first()
        balance = last.balance_after if last else Decimal(0)
        if last and last.seq != entries.count():
            problems.append(f"account {account.pk}: ledger sequence has gaps")
        if total != balance:
            problems.append(f"account {account.pk}: sum of entries {total} != balance {balance}")
        usage_debits = -(
            entries.filter(kind=LedgerEntry.Kind.USAGE).aggregate(total=Sum("amount"))["total"]
            or Decimal(0)
        )
        usage_cost = UsageEvent.objects.filter(account=account).aggregate(total=Sum("cost"))[
            "total"
        ] or Decimal(0)
        if usage_debits != usage_cost:
            problems.append(
                f"account {account.pk}: usage debits {usage_debits} != usage cost {usage_cost}"
            )
        redis_posted = figures(account.pk)["posted"]
        if redis_posted != to_nanos(balance):
            problems.append(
                f"account {account.pk}: Redis posted {redis_posted} nanos != ledger "
                f"{to_nanos(balance)} nanos"
            )
    return problems
