from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.reconcile import check


class Command(BaseCommand):
    help = "Compare ledger, usage events and Redis; exit non-zero on any drift."

    def handle(self, *args: Any, **options: Any) -> None:
        problems = check()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} problem(s) found")
        self.stdout.write("Ledger, usage and Redis agree.")
