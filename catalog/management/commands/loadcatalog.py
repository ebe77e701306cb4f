from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from catalog.loader import load


class Command(BaseCommand):
    help = (
        "Load the model catalog data file into the database and publish it to the relays. "
        "Rows last edited in the admin are kept (and listed) unless --reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, default=settings.TP_CATALOG_FILE)
        parser.add_argument(
            "--reset",
            action="store_true",
            help="The file wins: rows edited in the admin take the file's values again.",
        )

    def handle(self, *args: Any, path: Path, reset: bool, **options: Any) -> None:
        report = load(path, reset=reset)
        self.stdout.write(
            f"Loaded {report.providers} providers, {report.models} models, {report.routes} "
            f"routes ({report.prices} new price versions) from {path}"
        )
        if report.kept:
            self.stdout.write(
                f"Kept {len(report.kept)} edits made in the admin (loadcatalog --reset takes "
                "the file's values instead):"
            )
            for what in report.kept:
                self.stdout.write(f"  {what}")
