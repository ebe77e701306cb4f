from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management import account_named
from billing import ledger


class Command(BaseCommand):
    help = "Print a user's exact balance, then what is on hold and what is available."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")

    def handle(self, *args: Any, email: str, **options: Any) -> None:
        figures = ledger.summary(account_named(email))
        self.stdout.write(format(figures["balance"], "f"))
        self.stdout.write(f"on hold: {figures['on_hold']:f}")
        self.stdout.write(f"available: {figures['available']:f}")
