from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.vouchers import make_batch


class Command(BaseCommand):
    help = "Make a batch of voucher codes worth AMOUNT USD each; prints one code per line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("amount")
        parser.add_argument("count", type=int)
        parser.add_argument("--name", default="")
        parser.add_argument("--expires", help="last valid day, YYYY-MM-DD (UTC)")
        parser.add_argument("--note", default="")

    def handle(self, *args: Any, amount: str, count: int, **options: Any) -> None:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise CommandError(f"not an amount: {amount}") from None
        expires = None
        if options["expires"]:
            try:
                day = datetime.strptime(options["expires"], "%Y-%m-%d").date()
            except ValueError:
                raise CommandError("--expires is YYYY-MM-DD") from None
            expires = datetime.combine(day, time.max, tzinfo=UTC)
        try:
            batch = make_batch(
                name=options["name"] or f"{count} × ${value}",
                amount=value,
                count=count,
                expires_at=expires,
                note=options["note"],
                created_by="makevouchers",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for voucher in batch.vouchers.order_by("pk"):
            self.stdout.write(voucher.display_code)
        self.stderr.write(f"Made batch {batch.pk}: {count} code(s) of {value} USD")
