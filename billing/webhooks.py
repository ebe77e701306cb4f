"""Webhook endpoints: ``/webhooks/stripe/``, ``/webhooks/paypal/``, ``/webhooks/btcpay/``.

The signature is checked on the raw body before anything else; an unverified request is
answered 400 and leaves no trace. A verified event is stored once (unique provider event id)
and handed to its provider's handler under the event row's lock, so duplicates delivered at
the same time wait for the first and then answer 200 without doing anything. Unknown types are
stored as ``ignored`` (200). A handler that fails leaves the event ``failed`` with its error and
answers 500, so the provider retries; an operator can replay it (admin or ``replayevents``).
A verified event whose content has the wrong shape is kept ``failed`` too, but answered 400:
the same bytes would fail the same way, so a retry is not asked for.

No header or body answers 500: whatever the parsing of an unverified request raises is a
refusal (400), logged with its traceback so that the parser gets fixed.
"""

from __future__ import annotations

import logging
import traceback

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import WebhookEvent
from .providers.base import MAX_ID_LENGTH, Ignore, InvalidWebhook, Malformed, ProviderError
from .topups import get_provider

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
#: How the error of an event that failed on its own content begins (answered 400, not 500).
MALFORMED = "Malformed: "


def _answer(status: int, outcome: str) -> JsonResponse:
    return JsonResponse({"status": outcome}, status=status)


def receive(request: HttpRequest, provider_id: str) -> HttpResponse:
    provider = get_provider(provider_id)
    if len(request.body) > MAX_BODY_BYTES:
        return _answer(413, "too large")
    try:
        event = provider.verify_webhook(request)
        event_id, event_type = provider.event_identity(event)
    except InvalidWebhook as exc:
        log.warning("%s webhook refused: %s", provider_id, exc)
        return _answer(400, "invalid")
    except ProviderError as exc:
        if not exc.retry:  # PayPal refused to verify what we sent it
            log.warning("%s webhook refused by the provider: %s", provider_id, exc)
            return _answer(400, "invalid")
        # PayPal's verification call could not be made: ask PayPal to send it again.
        log.warning("%s webhook not verified yet: %s", provider_id, exc)
        return _answer(503, "retry")
    except Exception:
        # A parser that raised on input it should have refused: still a refusal, never a
        # traceback to the sender, but logged in full so that the parser gets fixed.
        log.exception("%s webhook: verification raised", provider_id)
        return _answer(400, "invalid")
    event_id, event_type = event_id[:MAX_ID_LENGTH], event_type[:100]
    try:
        with transaction.atomic():
            stored, created = WebhookEvent.objects.get_or_create(
                provider=provider_id,
                event_id=event_id,
                defaults={"type": event_type, "payload": event},
            )
    except IntegrityError:  # two first deliveries at once: the other one stored it
        stored, created = WebhookEvent.objects.get(provider=provider_id, event_id=event_id), False
    if not created:
        WebhookEvent.objects.filter(pk=stored.pk).update(deliveries=F("deliveries") + 1)
    outcome = process(stored.pk)
    if outcome.status == WebhookEvent.Status.FAILED:
        if outcome.error.startswith(MALFORMED):
            return _answer(400, "malformed")
        return _answer(500, "failed")
    return _answer(200, outcome.status if created else "duplicate")


def process(event_pk: int) -> WebhookEvent:
    """Run the event's handler unless it already ran to an end: a received or failed event
    runs (again), a processed or ignored one never does."""
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=event_pk)
        if event.status in {WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED}:
            return event
        handler = get_provider(event.provider).handler_for(event.type)
        event.attempts += 1
        if handler is None:
            event.status = WebhookEvent.Status.IGNORED
            event.error = ""
        else:
            try:
                with transaction.atomic():
                    handler(event.payload)
            except Ignore as exc:
                event.status = WebhookEvent.Status.IGNORED
                event.error = str(exc)[:2000]
            except Malformed as exc:
                log.warning("%s event %s is malformed: %s", event.provider, event.event_id, exc)
                event.status = WebhookEvent.Status.FAILED
                event.error = f"{MALFORMED}{exc}"[:10000]
            except Exception as exc:
                log.exception("handling %s event %s failed", event.provider, event.event_id)
                event.status = WebhookEvent.Status.FAILED
                event.error = (f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}")[
                    :10000
                ]
            else:
                event.status = WebhookEvent.Status.PROCESSED
                event.error = ""
        event.processed_at = timezone.now()
        event.save(update_fields=["status", "error", "attempts", "processed_at"])
        return event


def replay(events: list[WebhookEvent] | None = None) -> list[WebhookEvent]:
    """Run failed events again (all of them, or those given)."""
    if events is None:
        events = list(WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED))
    return [process(e.pk) for e in events]


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    return receive(request, "stripe")


@csrf_exempt
@require_POST
def paypal_webhook(request: HttpRequest) -> HttpResponse:
    return receive(request, "paypal")


@csrf_exempt
@require_POST
def btcpay_webhook(request: HttpRequest) -> HttpResponse:
    return receive(request, "btcpay")
