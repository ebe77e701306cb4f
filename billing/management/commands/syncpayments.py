from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing import topups


class Command(BaseCommand):
    help = "Ask the providers about payments still open (a safety net for missed webhooks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hours", type=int, default=48, help="how far back to look")

    def handle(self, *args: Any, hours: int, **options: Any) -> None:
        checked = topups.sync_open_payments(max_age_hours=hours)
        self.stdout.write(f"Checked {checked} open payment(s).")
