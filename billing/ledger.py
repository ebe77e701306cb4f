"""The ledger: the one balance authority. Entries are appended, never edited."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from accounts.models import Account
from core.pricing import from_nanos

from . import sync
from .models import LedgerEntry


def _last(account: Account) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(account=account).order_by("-seq").first()


def balance(account: Account) -> Decimal:
    last = _last(account)
    return last.balance_after if last else Decimal(0)


@transaction.atomic
def post_entry(
    *,
    account: Account,
    amount: Decimal,
    kind: str,
    reference: str = "",
    note: str = "",
    request_ids: list[str] | None = None,
) -> LedgerEntry:
    """Append one entry under the account's row lock and, after commit, tell the relays.

    ``request_ids`` names the usage events a usage debit covers, so that Redis forgets their
    unposted costs in the same step as it learns the new balance.
    """
    if not isinstance(amount, Decimal):
        raise TypeError("ledger amounts are Decimals")
    if amount == 0:
        raise ValueError("a ledger entry moves money")
    Account.objects.select_for_update().filter(pk=account.pk).get()
    last = _last(account)
    entry = LedgerEntry.objects.create(
        account=account,
        seq=(last.seq if last else 0) + 1,
        kind=kind,
        amount=amount,
        balance_after=(last.balance_after if last else Decimal(0)) + amount,
        reference=reference[:200],
        note=note[:500],
    )
    ids = list(request_ids or ())
    transaction.on_commit(
        lambda: sync.post(account.pk, seq=entry.seq, balance=entry.balance_after, request_ids=ids),
        robust=True,
    )
    return entry


def credit(*, account: Account, amount: Decimal, kind: str, reference: str = "", note: str = ""):
    if amount <= 0:
        raise ValueError("a credit is positive")
    return post_entry(account=account, amount=amount, kind=kind, reference=reference, note=note)


def summary(account: Account) -> dict[str, Decimal]:
    """What the user sees: the ledger balance, what is on hold or not yet posted, available."""
    figures = sync.figures(account.pk)
    bal = balance(account)
    pending = from_nanos(figures["held"] + figures["unposted"])
    return {"balance": bal, "on_hold": pending, "available": bal - pending}
