"""The request log: an account's usage events, filtered and paged, for the log page, its CSV and
the usage-requests API (one selector for all three).

Raw events run to millions per account, so nothing here counts them or skips with OFFSET: a
page is found by a keyset cursor on (started_at, id), newest first, through the index
``usage_account_time`` (account, started_at DESC). Every query is bounded by the account and,
where a range is given or a cursor points, by ``started_at`` as a constant, so PostgreSQL reads
only the months' partitions it needs. Cursors are signed (``django.core.signing``) and carry
the account they were made for: one cannot be forged, or used by anyone else.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.core import signing
from django.db.models import Q, QuerySet

from accounts.models import Account
from catalog.models import PriceVersion
from core.pricing import NANO, Line, lines

from .models import UsageEvent

PER_PAGE = 50
MAX_PER_PAGE = 200
CSV_CHUNK = 2000
_SALT = "billing.requestlog.cursor"
OLDER, NEWER = "o", "n"


class BadCursor(ValueError):
    """A cursor that was not made here, was changed, or was made for another account."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the log is narrowed to; ``since`` inclusive, ``until`` exclusive (aware times)."""

    key: int | None = None
    model: str = ""
    status: str = ""
    streamed: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_cost: Decimal | None = None
    # Only these keys' events (an organization's member reads their own keys' usage alone).
    keys: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    started_at: datetime
    id: int
    direction: str  # OLDER: the rows after this one (older); NEWER: the rows before it


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[UsageEvent]
    newer: str | None  # a cursor to the page before (newer rows), None on the newest page
    older: str | None  # a cursor to the next page (older rows), None on the last


def sign_cursor(account_id: int, started_at: datetime, event_id: int, direction: str) -> str:
    return signing.dumps(
        [account_id, started_at.isoformat(), event_id, direction], salt=_SALT, compress=True
    )


def make_cursor(account: Account, event: UsageEvent, direction: str) -> str:
    return sign_cursor(account.pk, event.started_at, event.pk, direction)


def read_cursor(account: Account, value: str) -> Cursor:
    try:
        account_id, started_at, event_id, direction = signing.loads(value, salt=_SALT)
        if account_id != account.pk or direction not in (OLDER, NEWER):
            raise BadCursor(value)
        return Cursor(datetime.fromisoformat(started_at), int(event_id), direction)
    except (signing.BadSignature, TypeError, ValueError) as exc:
        raise BadCursor(value) from exc


def events(account: Account, filters: Filters) -> QuerySet[UsageEvent]:
    """The account's events that pass the filters, in no order."""
    query = UsageEvent.objects.filter(account=account)
    if filters.keys is not None:
        query = query.filter(key_id__in=filters.keys)
    if filters.key is not None:
        query = query.filter(key_id=filters.key)
    if filters.model:
        query = query.filter(model_id=filters.model)
    if filters.status:
        query = query.filter(status=filters.status)
    if filters.streamed is not None:
        query = query.filter(streamed=filters.streamed)
    if filters.since is not None:
        query = query.filter(started_at__gte=filters.since)
    if filters.until is not None:
        query = query.filter(started_at__lt=filters.until)
    if filters.min_cost is not None:
        query = query.filter(cost__gte=filters.min_cost)
    return query


def _after(query: QuerySet[UsageEvent], cursor: Cursor) -> QuerySet[UsageEvent]:
    """The rows beyond the cursor in its direction, in that direction's order. The plain bound
    on started_at comes first: it is what the index and the partitions' pruning use; the tie
    on the same instant is broken by id."""
    t, i = cursor.started_at, cursor.id
    if cursor.direction == OLDER:
        return query.filter(Q(started_at__lt=t) | Q(id__lt=i), started_at__lte=t).order_by(
            "-started_at", "-id"
        )
    return query.filter(Q(started_at__gt=t) | Q(id__gt=i), started_at__gte=t).order_by(
        "started_at", "id"
    )


def page(
    account: Account, filters: Filters, cursor: str | None = None, per_page: int = PER_PAGE
) -> Page:
    """One page of the log, newest first. Raises :class:`BadCursor`."""
    query = events(account, filters).select_related("key")
    if cursor:
        position = read_cursor(account, cursor)
        rows = list(_after(query, position)[: per_page + 1])
        more = len(rows) > per_page
        rows = rows[:per_page]
        if position.direction == NEWER:
            if not more:
                # Back at the newest rows: the newest page itself, full.
                return page(account, filters, None, per_page)
            rows.reverse()
            return Page(
                rows,
                newer=make_cursor(account, rows[0], NEWER),
                older=make_cursor(account, rows[-1], OLDER),
            )
        return Page(
            rows,
            newer=make_cursor(account, rows[0], NEWER) if rows else None,
            older=make_cursor(account, rows[-1], OLDER) if more else None,
        )
    rows = list(query.order_by("-started_at", "-id")[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    return Page(rows, newer=None, older=make_cursor(account, rows[-1], OLDER) if more else None)


def find(
    account: Account, request_id: str, keys: tuple[int, ...] | None = None
) -> UsageEvent | None:
    """The account's event of this request id (the relay's ``x-request-id``), or None; with
    ``keys``, only if one of those keys made it."""
    if not request_id or len(request_id) > 64:
        return None
    query = UsageEvent.objects.filter(account=account, request_id=request_id)
    if keys is not None:
        query = query.filter(key_id__in=keys)
    return query.select_related("key", "ledger_entry").order_by("-started_at").first()


def cost_lines(event: UsageEvent) -> list[Line] | None:
    """What each price type of the event's price version charged for its usage (their sum,
    rounded once, is the cost of that usage), or None where the version is unknown here."""
    if event.price_version is None:
        return None
    version = PriceVersion.objects.filter(
        model_id=event.model_id, version=event.price_version
    ).first()
    if version is None:
        return None
    return lines(
        version.as_price(),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens,
        cache_write_tokens=event.cache_write_tokens,
        cache_write_1h_tokens=event.cache_write_1h_tokens,
        reasoning_tokens=event.reasoning_tokens,
        input_audio_tokens=event.input_audio_tokens,
        output_audio_tokens=event.output_audio_tokens,
        images=event.images,
        audio_ms=event.audio_ms,
    )


def lines_total(cost_lines: list[Line]) -> Decimal:
    """The lines' sum rounded once by the cost function's rule: what that usage costs."""
    return sum((line.amount for line in cost_lines), Decimal(0)).quantize(
        NANO, rounding=ROUND_CEILING
    )


def decimal_text(value: Decimal) -> str:
    """An exact decimal string, never in exponent form (``0E-9`` is ``0.000000000``)."""
    return format(value, "f")


CSV_COLUMNS = (
    "request_id",
    "started_at",
    "key_id",
    "key_name",
    "model",
    "provider",
    "upstream_model",
    *UsageEvent.RESULT,
)
_FIELDS = (
    "id",
    "request_id",
    "started_at",
    "key_id",
    "key__name",
    "model_id",
    "provider",
    "upstream_model",
    *UsageEvent.RESULT,
)


def _text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (a key's name is the user's)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return _text(value)
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(account: Account, filters: Filters) -> Iterator[str]:
    """The log as CSV lines, newest first: the header, then the rows read in keyset chunks of
    ``CSV_CHUNK`` (never all at once, and no cursor held open between chunks)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    query = events(account, filters)
    chunk = list(query.order_by("-started_at", "-id").values_list(*_FIELDS)[:CSV_CHUNK])
    while chunk:
        for row in chunk:
            yield writer.writerow([_cell(v) for v in row[1:]])
        if len(chunk) < CSV_CHUNK:
            return
        last = chunk[-1]
        position = Cursor(started_at=last[2], id=last[0], direction=OLDER)
        chunk = list(_after(query, position).values_list(*_FIELDS)[:CSV_CHUNK])
