"""The audit log (issue 15): who did what to an account, when, from which network.

Services record; nothing else writes. ``record`` is called by the services that change what an
account holds (keys.services, billing.payments, billing.vouchers, billing.ledger) and by the
receivers of allauth's signals (accounts.signals); the layers above pass the actor and the
network down from their requests, and commands leave them out (the operator acted). An event
joins the caller's transaction, so a change that rolls back leaves no event behind.

Reading is one selector for the page, its CSV and the API, paged by a signed keyset cursor on
(created_at, id), newest first, through the index ``audit_page``: no COUNT, no OFFSET. Who may
read an account's log is decided in one place, ``can_read``, which organizations will widen to
their owners and admins.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypedDict

from django.core import signing
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from core.network import coarse

from . import roles
from .models import Account, AuditEvent, User

Action = AuditEvent.Action

PER_PAGE = 50
MAX_PER_PAGE = 200
CSV_CHUNK = 2000
_SALT = "accounts.audit.cursor"


# ---- writing ---------------------------------------------------------------------------------


def network_of(request: Any) -> str:
    """The client's coarse network (IPv4 /24, IPv6 /48), as the relay records a key's last use.
    ``REMOTE_ADDR`` is already the client's: the portal's server rewrites it from
    X-Forwarded-For for TP_TRUSTED_PROXIES alone (serving/__main__.py). Takes Django's request
    or DRF's (which hands ``META`` through)."""
    return coarse(request.META.get("REMOTE_ADDR") or None)


class Origin(TypedDict):
    """Who acted and from where, as the services take them (``**audit.origin(request)``)."""

    actor: User | None
    network: str


def origin(request: Any) -> Origin:
    """The signed-in user of a page's or an API call's request (a management key's owner), and
    the request's network."""
    user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    return {"actor": actor, "network": network_of(request)}


def _jsonable(value: Any) -> Any:
    """Details are small JSON; money stays an exact decimal string, never a float."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def record(
    *,
    account: Account,
    action: str,
    actor: User | None = None,
    target: str = "",
    network: str = "",
    request: HttpRequest | None = None,
    details: Mapping[str, Any] | None = None,
    by_system: bool = False,
) -> AuditEvent:
    """Append one event. ``actor`` None: the operator (a command, the admin), or with
    ``by_system`` the system itself (a payment provider's webhook, a leak report). With
    ``request``, the network is the request's and, if no actor is named, the actor is its
    signed-in user. ``target`` names what was acted on (a key's name and masked form, a
    receipt number): never a secret."""
    if request is not None:
        network = network or network_of(request)
        user = getattr(request, "user", None)
        if actor is None and user is not None and user.is_authenticated:
            actor = user
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    if actor is not None:
        label = actor.email
    else:
        label = AuditEvent.SYSTEM if by_system else AuditEvent.OPERATOR
    return AuditEvent.objects.create(
        account=account,
        actor=actor,
        actor_label=label[:254],
        action=action,
        target=target.replace("\x00", "")[:200],
        network=network[:64],
        details=_jsonable(dict(details or {})),
    )


def forget(user: User) -> int:
    """Erase what the log says personally of ``user`` when their account is deleted: the
    address their events name them by and the networks they acted from. The events stay (the
    account's history: which key was revoked when); the only change ever made to the log."""
    done: int = models.QuerySet.update(
        AuditEvent.objects.filter(actor=user), actor_label=user.email[:254], network=""
    )
    return done


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What differs between two snapshots of the same fields, as ``{field: {"old", "new"}}``."""
    return {
        name: {"old": _jsonable(before.get(name)), "new": _jsonable(value)}
        for name, value in after.items()
        if before.get(name) != value
    }


# ---- who reads ---------------------------------------------------------------------------


def can_read(user: Any, account: Account) -> bool:
    """Whether ``user`` may read ``account``'s log: a personal account's user, an
    organization's owner and admins. Every page and API call asks this one function."""
    return roles.can(user, account, roles.AUDIT)


# ---- reading -----------------------------------------------------------------------------


class BadCursor(ValueError):
    """A cursor that was not made here, was changed, or was made for another account."""


@dataclass(frozen=True, slots=True)
class Filters:
    """``since`` inclusive, ``until`` exclusive (aware times); ``action`` one of Action's."""

    action: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[AuditEvent]
    older: str | None  # a cursor to the next page (older events), None on the last


def sign_cursor(account_id: int, created_at: datetime, event_id: int) -> str:
    """A cursor to the events after (older than) this one, good for this account only."""
    return signing.dumps([account_id, created_at.isoformat(), event_id], salt=_SALT)


def read_cursor(account_id: int, value: str) -> tuple[datetime, int]:
    """The position a cursor points at. Raises :class:`BadCursor`."""
    try:
        owner, created_at, event_id = signing.loads(value, salt=_SALT)
        if owner != account_id:
            raise BadCursor(value)
        return datetime.fromisoformat(created_at), int(event_id)
    except (signing.BadSignature, TypeError, ValueError) as exc:
        raise BadCursor(value) from exc


def events(account: Account, filters: Filters) -> QuerySet[AuditEvent]:
    """The account's events that pass the filters, newest first."""
    query = AuditEvent.objects.filter(account=account)
    if filters.action:
        query = query.filter(action=filters.action)
    if filters.since is not None:
        query = query.filter(created_at__gte=filters.since)
    if filters.until is not None:
        query = query.filter(created_at__lt=filters.until)
    return query.order_by("-created_at", "-id")


def _older_than(query: QuerySet[AuditEvent], created_at: datetime, event_id: int) -> Any:
    # The plain bound on the time is what the index uses; a tie on one instant goes by id.
    return query.filter(
        Q(created_at__lt=created_at) | Q(id__lt=event_id), created_at__lte=created_at
    )


def page(
    account: Account, filters: Filters, cursor: str | None = None, per_page: int = PER_PAGE
) -> Page:
    """One page of the log, newest first, after ``cursor``. Raises :class:`BadCursor`."""
    query = events(account, filters).select_related("actor")
    if cursor:
        query = _older_than(query, *read_cursor(account.pk, cursor))
    rows = list(query[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    return Page(
        rows, older=sign_cursor(account.pk, rows[-1].created_at, rows[-1].pk) if more else None
    )


# ---- the CSV -------------------------------------------------------------------------------

CSV_COLUMNS = ("time", "actor", "action", "target", "network", "details")


def _text(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (a key's name is the user's)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(account: Account, filters: Filters) -> Iterator[str]:
    """The log as CSV lines, newest first, read in keyset chunks (never all at once). Times in
    UTC (RFC 3339), the action by its stable dotted name, details as JSON."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    query = events(account, filters)
    chunk = list(query[:CSV_CHUNK])
    while chunk:
        for event in chunk:
            yield writer.writerow(
                [
                    event.created_at.isoformat(),
                    _text(event.actor_label),
                    event.action,
                    _text(event.target),
                    event.network,
                    _text(json.dumps(event.details, ensure_ascii=False, sort_keys=True))
                    if event.details
                    else "",
                ]
            )
        if len(chunk) < CSV_CHUNK:
            return
        last = chunk[-1]
        chunk = list(_older_than(query, last.created_at, last.pk)[:CSV_CHUNK])
