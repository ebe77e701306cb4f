"""Vouchers: operators make batches of codes worth an amount; a user redeems a code once.

Redemption locks the voucher row, so two users (or two tabs) racing for one code give one
credit; a failed-attempt counter per user slows down guessing.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts import audit
from accounts.models import Account, User

from . import ledger
from .models import LedgerEntry, Voucher, VoucherBatch

# Crockford's base32: no I, L, O or U, so a code read aloud or typed is hard to get wrong.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16  # 80 bits
MAX_FAILURES_PER_HOUR = 10


class VoucherError(Exception):
    """Shown to the user as it is."""


class UnknownCode(VoucherError):
    """No such code: what guessing produces, so it counts towards the hourly limit."""


def normalise(code: str) -> str:
    cleaned = re.sub(r"[\s-]+", "", code or "").upper()
    return cleaned.translate(str.maketrans("ILO", "110"))


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


@transaction.atomic
def make_batch(
    *,
    name: str,
    amount: Decimal,
    count: int,
    expires_at: datetime | None = None,
    note: str = "",
    created_by: str = "",
) -> VoucherBatch:
    if not isinstance(amount, Decimal) or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValueError("a voucher is worth a positive amount in whole cents")
    if not 1 <= count <= 100_000:
        raise ValueError("a batch has between 1 and 100000 codes")
    batch = VoucherBatch.objects.create(
        name=name,
        amount=amount,
        count=count,
        expires_at=expires_at,
        note=note,
        created_by=created_by,
    )
    codes: set[str] = set()
    while len(codes) < count:
        codes.add(new_code())
    Voucher.objects.bulk_create(
        [Voucher(batch=batch, code=c, amount=amount, expires_at=expires_at) for c in codes]
    )
    return batch


def _failures_key(account: Account) -> str:
    return f"voucher-failures:{account.pk}"


def redeem(*, account: Account, code: str, actor: User | None = None, network: str = "") -> Voucher:
    """Credit the voucher's amount to ``account`` once. Raises VoucherError. ``actor`` and
    ``network``: who redeemed it, from where, for the audit log."""
    key = _failures_key(account)
    if int(cache.get(key) or 0) >= MAX_FAILURES_PER_HOUR:
        raise VoucherError(_("Too many wrong codes. Try again in an hour."))
    normalised = normalise(code)
    try:
        with transaction.atomic():
            voucher = Voucher.objects.select_for_update().filter(code=normalised).first()
            if voucher is None or not normalised:
                raise UnknownCode(_("This code is not valid."))
            if voucher.redeemed_by_id is not None:
                raise VoucherError(_("This code has already been used."))
            if voucher.expires_at and voucher.expires_at <= timezone.now():
                raise VoucherError(_("This code has expired."))
            entry = ledger.credit(
                account=account,
                amount=voucher.amount,
                kind=LedgerEntry.Kind.VOUCHER,
                reference=f"voucher:{voucher.pk}",
                note=_("Voucher …%(last)s") % {"last": voucher.code[-4:]},
            )
            voucher.redeemed_by = account
            voucher.redeemed_at = timezone.now()
            voucher.ledger_entry = entry
            voucher.save(update_fields=["redeemed_by", "redeemed_at", "ledger_entry"])
            audit.record(
                account=account,
                action=audit.Action.VOUCHER_REDEEMED,
                actor=actor,
                network=network,
                # The code's last four, as the ledger's note: the whole code was money.
                target=f"…{voucher.code[-4:]}",
                details={"amount": voucher.amount},
            )
            return voucher
    except UnknownCode:
        cache.add(key, 0, 3600)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, 3600)
        raise
