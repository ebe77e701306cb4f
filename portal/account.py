"""Account data: export everything we hold about a user, and delete an account.

Deleting erases personal data, revokes every key at once and forgets the account's own
provider keys (BYOK), but keeps the ledger and the usage log (anonymised: they hang off an
account whose user no longer has a name or an email) because accounting needs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from allauth.account.models import EmailAddress
from allauth.usersessions.models import UserSession
from django.apps import apps
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from accounts import audit, organizations
from accounts.models import AuditEvent, Membership, Role, User
from accounts.selectors import account_of
from billing import ledger
from billing.models import LedgerEntry, UsageEvent
from keys.byok import remove_credential
from keys.models import LIMIT_FIELDS, ApiKey, ProviderCredential
from keys.services import revoke_key, revoke_management_key


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False)


KEY_FIELDS = (
    "name",
    "prefix",
    "last4",
    "status",
    "created_at",
    "last_used_at",
    "revoked_at",
    *LIMIT_FIELDS,
)
AUDIT_FIELDS = ("created_at", "actor_label", "action", "target", "network", "details")
LEDGER_FIELDS = ("seq", "created_at", "kind", "amount", "balance_after", "reference", "note")
USAGE_FIELDS = (
    "request_id",
    "started_at",
    "key__name",
    "model_id",
    "provider",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "price_version",
    "estimated",
    "status",
    "streamed",
    "duration_ms",
)


def export(user: User) -> Iterator[str]:
    """The user's data as one JSON document, streamed: the usage log can be long. Keys
    appear without secrets (we have none to give)."""
    account = account_of(user)
    head = {
        "account": {
            "email": user.email,
            "name": user.name,
            "time_zone": user.time_zone,
            "date_joined": user.date_joined,
            "email_addresses": list(
                EmailAddress.objects.filter(user=user).values("email", "verified", "primary")
            ),
            "balance": ledger.balance(account),
        },
        "api_keys": list(ApiKey.objects.filter(account=account).values(*KEY_FIELDS)),
        "management_keys": list(
            account.management_keys.values("name", "prefix", "last4", "created_at", "revoked_at")
        ),
        # The account's own provider keys (BYOK): which, never the key.
        "provider_keys": list(
            ProviderCredential.objects.filter(account=account)
            .order_by("provider__slug")
            .values("provider__slug", "mode", "last4", "checked_at", "created_at", "updated_at")
        ),
    }
    yield _dumps(head)[:-1]
    for name, rows in (
        (
            "ledger",
            LedgerEntry.objects.filter(account=account).order_by("seq").values(*LEDGER_FIELDS),
        ),
        (
            "usage",
            UsageEvent.objects.filter(account=account).order_by("started_at").values(*USAGE_FIELDS),
        ),
        (
            "audit_log",
            AuditEvent.objects.filter(account=account)
            .order_by("created_at", "id")
            .values(*AUDIT_FIELDS),
        ),
    ):
        yield f', "{name}": ['
        for i, row in enumerate(rows.iterator(chunk_size=2000)):
            yield ("," if i else "") + _dumps(row)
        yield "]"
    yield "}\n"


@transaction.atomic
def delete(user: User) -> None:
    """Deletes the user's personal data and revokes their keys. They leave every organization
    (their keys there are revoked); an owner whose organization has other members must
    transfer it first (OrganizationError)."""
    for membership in Membership.objects.filter(user=user).select_related("organization"):
        if membership.role != Role.OWNER:
            organizations.leave(membership=membership)
        elif membership.organization.memberships.count() > 1:
            raise organizations.OrganizationError(
                _("Transfer the ownership of “%(name)s” before deleting your account.")
                % {"name": membership.organization.name}
            )
        else:  # theirs alone: it stays, with its ledger, but nobody acts for it any more
            for key in ApiKey.objects.filter(
                account__organization=membership.organization, status=ApiKey.Status.ACTIVE
            ):
                revoke_key(key=key, actor=user, reason="account_deleted")
            _forget_provider_keys(
                ProviderCredential.objects.filter(account__organization=membership.organization),
                user,
            )
            membership.delete()
    account = account_of(user)
    for key in ApiKey.objects.filter(account=account, status=ApiKey.Status.ACTIVE):
        revoke_key(key=key, actor=user, reason="account_deleted")
    # Another service's secrets are not kept for an account nobody can use.
    _forget_provider_keys(ProviderCredential.objects.filter(account=account), user)
    for management_key in account.management_keys.filter(revoked_at__isnull=True):
        revoke_management_key(key=management_key, actor=user, reason="account_deleted")
    # Every signed-in session of the user ends (allauth's session list knows them all).
    for session in UserSession.objects.filter(user=user):
        session.end()
    EmailAddress.objects.filter(user=user).delete()
    _delete_related(user)
    user.email = f"deleted-{user.pk}@deleted.invalid"
    user.name = ""
    user.time_zone = ""  # where they are, roughly: personal too
    user.password = make_password(None)
    user.is_active = False
    user.is_staff = False
    user.is_superuser = False
    user.save()
    audit.forget(user)  # the events they did name them by the erased address from now on


def _forget_provider_keys(credentials: QuerySet[ProviderCredential], user: User) -> None:
    """Removes these BYOK keys as their page's Remove does: audited, and every relay stops
    using them within a second."""
    for credential in credentials.select_related("account", "provider"):
        remove_credential(credential=credential, actor=user)


def _delete_related(user: User) -> None:
    """Other personal records apps keep about the user (two-factor devices, sessions list,
    billing details), wherever those apps are installed."""
    for label, model_name, field in (
        ("mfa", "Authenticator", "user"),
        ("billing", "BillingProfile", "account__user"),
    ):
        try:
            model = apps.get_model(label, model_name)
        except LookupError:
            continue
        model.objects.filter(**{field: user}).delete()
