from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing import partitions


class Command(BaseCommand):
    help = (
        "Make the raw usage events' monthly partitions ahead and drop those past the retention "
        "(TP_USAGE_RETENTION_MONTHS; on SQLite, delete the old rows). Beat runs it daily."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = partitions.upkeep()
        for name in report.created:
            self.stdout.write(f"created {name}")
        for name in report.dropped:
            self.stdout.write(f"dropped {name}")
        if report.deleted_rows:
            self.stdout.write(f"deleted {report.deleted_rows} old usage events")
        horizon = partitions.retention_horizon()
        kept = f"since {horizon:%Y-%m-%d %H:%M} UTC" if horizon else "for ever"
        self.stdout.write(f"Raw usage events kept {kept}; rollups kept for ever.")
