from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services import find, revoke_key


class Command(BaseCommand):
    help = "Revoke a key given its whole secret or its displayed prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")

    def handle(self, *args: Any, key: str, **options: Any) -> None:
        found = find(key)
        if found is None:
            raise CommandError("no such key (or the prefix matches more than one)")
        revoke_key(key=found)
        self.stdout.write(f"Revoked {found.masked} ({found.name})")
