from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from catalog.loader import load


class Command(BaseCommand):
    help = "Load the model catalog data file into the database and publish it to the relays."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, default=settings.TP_CATALOG_FILE)

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        counts = load(path)
        self.stdout.write(
            f"Loaded {counts['providers']} providers, {counts['models']} models "
            f"({counts['prices']} new price versions) from {path}"
        )
