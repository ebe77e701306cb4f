from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management import account_named
from billing import ledger


class Command(BaseCommand):
    help = "Add an operator adjustment to a user's balance (USD; negative to debit)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("amount")
        parser.add_argument("--note", default="")

    def handle(self, *args: Any, email: str, amount: str, note: str, **options: Any) -> None:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise CommandError(f"not an amount: {amount}") from None
        if not value.is_finite() or value == 0 or value.as_tuple().exponent < -9:  # type: ignore[operator]
            raise CommandError("the amount must be non-zero with at most 9 decimals")
        entry = ledger.adjust(account=account_named(email), amount=value, note=note)
        self.stdout.write(f"Credited {value} USD to {email}; balance {entry.balance_after}")
