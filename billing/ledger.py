"""The ledger: the one balance authority. Entries are appended, never edited."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.db import transaction
from django.db.models import OuterRef, Subquery

from accounts import audit
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


def last_entries(account_ids: Iterable[int]) -> dict[int, LedgerEntry]:
    """Each account's newest entry, in one query (accounts without entries are left out)."""
    newest = LedgerEntry.objects.filter(account_id=OuterRef("account_id")).order_by("-seq")
    return {
        entry.account_id: entry
        for entry in LedgerEntry.objects.filter(
            account_id__in=list(account_ids), seq=Subquery(newest.values("seq")[:1])
        )
    }


def post_usage_debits(
    debits: dict[int, tuple[Decimal, str, list[str]]], last: dict[int, LedgerEntry]
) -> dict[int, LedgerEntry]:
    """The usage worker's debits of many accounts at once, by the rules of ``post_entry``: the
    caller holds every account's row lock (``usage.record_batch`` takes them in id order) and
    passes their newest entries read under it (``last_entries``); the entries go in with one
    insert, and after commit each account's balance and covered requests reach Redis.
    ``debits``: account id → (negative amount, reference, request ids)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("post_usage_debits runs inside the caller's locking transaction")
    entries = []
    for account_id, (amount, reference, _) in sorted(debits.items()):
        if not isinstance(amount, Decimal):
            raise TypeError("ledger amounts are Decimals")
        if amount >= 0:
            raise ValueError("a usage debit is negative")
        previous = last.get(account_id)
        entries.append(
            LedgerEntry(
                account_id=account_id,
                seq=(previous.seq if previous else 0) + 1,
                kind=LedgerEntry.Kind.USAGE,
                amount=amount,
                balance_after=(previous.balance_after if previous else Decimal(0)) + amount,
                reference=reference[:200],
            )
        )
    LedgerEntry.objects.bulk_create(entries)
    posted = {entry.account_id: entry for entry in entries}
    for entry in entries:
        ids = list(debits[entry.account_id][2])
        transaction.on_commit(
            lambda entry=entry, ids=ids: sync.post(  # type: ignore[misc]
                entry.account_id, seq=entry.seq, balance=entry.balance_after, request_ids=ids
            ),
            robust=True,
        )
    return posted


def credit(*, account: Account, amount: Decimal, kind: str, reference: str = "", note: str = ""):
    if amount <= 0:
        raise ValueError("a credit is positive")
    return post_entry(account=account, amount=amount, kind=kind, reference=reference, note=note)


@transaction.atomic
def adjust(*, account: Account, amount: Decimal, note: str = "") -> LedgerEntry:
    """An operator's credit (or, negative, debit): ``manage.py credit`` and the admin's
    "credit or debit an account" both come here, and the account's audit log shows it."""
    entry = post_entry(
        account=account,
        amount=amount,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        reference="operator",
        note=note,
    )
    audit.record(
        account=account,
        action=audit.Action.CREDIT_GRANTED,
        target=f"ledger #{entry.seq}",
        details={"amount": amount, "note": entry.note} if entry.note else {"amount": amount},
    )
    return entry


def summary(account: Account) -> dict[str, Decimal]:
    """What the user sees: the ledger balance, what is on hold or not yet posted, available."""
    figures = sync.figures(account.pk)
    bal = balance(account)
    pending = from_nanos(figures["held"] + figures["unposted"])
    return {"balance": bal, "on_hold": pending, "available": bal - pending}
