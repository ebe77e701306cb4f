from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import webhooks
from billing.models import WebhookEvent


class Command(BaseCommand):
    help = (
        "Run stored provider events again: by default every failed one. Processed and ignored "
        "events never run twice; exits non-zero if any event is still failing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("event_ids", nargs="*", help="provider event ids (default: all failed)")
        parser.add_argument("--provider", choices=["stripe", "paypal", "btcpay"])

    def handle(
        self, *args: Any, event_ids: list[str], provider: str | None, **options: Any
    ) -> None:
        events = WebhookEvent.objects.all()
        if provider:
            events = events.filter(provider=provider)
        events = (
            events.filter(event_id__in=event_ids)
            if event_ids
            else events.filter(status=WebhookEvent.Status.FAILED)
        )
        selected = list(events.order_by("received_at"))
        if event_ids and len(selected) < len(set(event_ids)):
            found = {e.event_id for e in selected}
            raise CommandError(f"unknown event(s): {', '.join(sorted(set(event_ids) - found))}")
        failed = 0
        for event in webhooks.replay(selected):
            self.stdout.write(f"{event.provider} {event.event_id} {event.type}: {event.status}")
            if event.status == WebhookEvent.Status.FAILED:
                failed += 1
                self.stderr.write(event.error.splitlines()[0] if event.error else "")
        self.stdout.write(f"Replayed {len(selected)} event(s), {failed} still failing.")
        if failed:
            raise CommandError(f"{failed} event(s) still failing")
