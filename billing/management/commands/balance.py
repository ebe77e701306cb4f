from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing import ledger

from ._common import account_by_email


class Command(BaseCommand):
    help = "Print a user's exact balance, then what is on hold and what is available."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")

    def handle(self, *args: Any, email: str, **options: Any) -> None:
        figures = ledger.summary(account_by_email(email))
        self.stdout.write(format(figures["balance"], "f"))
        self.stdout.write(f"on hold: {figures['on_hold']:f}")
        self.stdout.write(f"available: {figures['available']:f}")
