from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management import account_named
from keys.services import issue_key


class Command(BaseCommand):
    help = "Issue an API key for a user; prints the secret once and nothing else on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--name", required=True)

    def handle(self, *args: Any, email: str, name: str, **options: Any) -> None:
        _, secret = issue_key(account=account_named(email), name=name)
        self.stdout.write(secret)
