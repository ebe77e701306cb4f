from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.models import Account, User
from core import keyformat

from . import sync
from .models import LIMIT_FIELDS, ApiKey, ManagementKey


def digest(secret: str) -> str:
    return keyformat.digest(secret, settings.TP_KEY_PEPPER)


def _target(key: ApiKey | ManagementKey) -> str:
    """How the audit log names a key: its name and masked form, never the secret."""
    return f"{key.name} ({key.masked})"


def _audit(
    key: ApiKey | ManagementKey,
    action: str,
    *,
    actor: User | None,
    network: str,
    details: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    """One audit event about ``key``, in its account's log. ``reason`` (a revoke's) goes into
    the details."""
    if reason:
        details = {**(details or {}), "reason": reason}
    audit.record(
        account=key.account,
        action=action,
        actor=actor,
        network=network,
        target=_target(key),
        details=details,
        # Nobody asked, for a reason: a leak report, an expiry.
        by_system=actor is None and bool(reason),
    )


@transaction.atomic
def issue_key(
    *,
    account: Account,
    name: str,
    limits: dict[str, Any] | None = None,
    actor: User | None = None,
    network: str = "",
) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned to be shown once and is never stored. ``actor``
    and ``network`` (here and below) are for the audit log: who asked, from where; None for
    the operator's commands and the admin."""
    key, secret = _issue(
        account=account, name=name, limits=limits, created_by=actor or account.user
    )
    _audit(
        key,
        audit.Action.KEY_CREATED,
        actor=actor,
        network=network,
        details={"limits": _set_limits(key)} if _set_limits(key) else None,
    )
    return key, secret


def _limits(key: ApiKey) -> dict[str, Any]:
    return {name: getattr(key, name) for name in LIMIT_FIELDS}


def _set_limits(key: ApiKey) -> dict[str, Any]:
    return {name: value for name, value in _limits(key).items() if value not in (None, "", [], {})}


def _issue(
    *, account: Account, name: str, limits: dict[str, Any] | None, created_by: User | None
) -> tuple[ApiKey, str]:
    """``created_by``: the member the key is of (who asked; for the operator's commands, a
    personal account's user)."""
    secret = keyformat.generate()
    key = ApiKey.objects.create(
        account=account,
        created_by=created_by,
        name=name.strip()[:100] or "default",
        digest=digest(secret),
        prefix=keyformat.display_prefix(secret),
        last4=keyformat.last_four(secret),
        **{k: v for k, v in (limits or {}).items() if k in LIMIT_FIELDS},
    )
    transaction.on_commit(lambda: sync.push(key))
    return key, secret


class RevokedKey(ValueError):
    """A revoked key is read-only: nothing about it changes any more."""


def _changeable(key: ApiKey) -> ApiKey:
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if not locked.is_active:
        raise RevokedKey("a revoked key cannot be changed")
    return locked


@transaction.atomic
def rename_key(*, key: ApiKey, name: str, actor: User | None = None, network: str = "") -> ApiKey:
    """The name is the owner's label only: the relays never see it, so nothing is pushed."""
    key = _changeable(key)
    old = key.name
    key.name = name.strip()[:100] or key.name
    key.save(update_fields=["name"])
    if key.name != old:
        _audit(
            key,
            audit.Action.KEY_RENAMED,
            actor=actor,
            network=network,
            details=audit.changes({"name": old}, {"name": key.name}),
        )
    return key


@transaction.atomic
def update_limits(
    *, key: ApiKey, limits: dict[str, Any], actor: User | None = None, network: str = ""
) -> ApiKey:
    key = _changeable(key)
    before = _limits(key)
    for name, value in limits.items():
        if name in LIMIT_FIELDS:
            setattr(key, name, value)
    key.save(update_fields=[n for n in limits if n in LIMIT_FIELDS])
    transaction.on_commit(lambda: sync.push(key))
    changed = audit.changes(before, _limits(key))
    # Routing defaults are told apart from the limits; a form saved as it was is no event.
    routing = changed.pop("routing", None)
    for action, details in (
        (audit.Action.KEY_LIMITS_CHANGED, changed),
        (audit.Action.KEY_ROUTING_CHANGED, {"routing": routing} if routing else {}),
    ):
        if details:
            _audit(key, action, actor=actor, network=network, details=details)
    return key


@transaction.atomic
def revoke_key(
    *, key: ApiKey, actor: User | None = None, network: str = "", reason: str = ""
) -> ApiKey:
    """``reason`` says why where nobody asked (``leaked``, ``expired``) or someone asked for
    more than this key (``account_deleted``); it goes into the audit log."""
    key, revoked = _revoke(key)
    if revoked:
        _audit(key, audit.Action.KEY_REVOKED, actor=actor, network=network, reason=reason)
    return key


def _revoke(key: ApiKey) -> tuple[ApiKey, bool]:
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    revoked = key.is_active
    if revoked:
        key.status = ApiKey.Status.REVOKED
        key.revoked_at = timezone.now()
        key.save(update_fields=["status", "revoked_at"])
    # Pushed even when already revoked: repeating a revoke heals a missed eviction.
    transaction.on_commit(lambda: sync.push(key))
    return key, revoked


@transaction.atomic
def rotate_key(
    *, key: ApiKey, grace_seconds: int = 0, actor: User | None = None, network: str = ""
) -> tuple[ApiKey, str]:
    """A new secret with the same name and limits. The old key is revoked at once, or keeps
    working until the grace period ends (the relay refuses it by its expiry from then). One
    audit event says it all (no separate "created" and "revoked")."""
    old = ApiKey.objects.select_for_update().get(pk=key.pk)
    if not old.is_active:
        raise ValueError("a revoked key cannot be rotated")
    new, secret = _issue(
        account=old.account, name=old.name, limits=_limits(old), created_by=old.created_by
    )
    _audit(
        old,
        audit.Action.KEY_ROTATED,
        actor=actor,
        network=network,
        details={"new_key": new.masked, "grace_seconds": max(grace_seconds, 0)},
    )
    old.replaced_by = new
    if grace_seconds <= 0:
        old.save(update_fields=["replaced_by"])
        _revoke(old)
    else:
        ends = timezone.now() + timedelta(seconds=grace_seconds)
        old.expires_at = min(old.expires_at, ends) if old.expires_at else ends
        old.save(update_fields=["replaced_by", "expires_at"])
        transaction.on_commit(lambda: sync.push(old))
    return new, secret


def find(identifier: str) -> ApiKey | None:
    """A key by its whole secret or by its displayed prefix (unique among active keys)."""
    identifier = identifier.strip()
    if keyformat.is_well_formed(identifier):
        return ApiKey.objects.filter(digest=digest(identifier)).first()
    prefix = identifier.split("…")[0].rstrip(".")
    matches = list(ApiKey.objects.filter(prefix=prefix)[:2])
    return matches[0] if len(matches) == 1 else None


# ---- management keys -------------------------------------------------------------------------


@transaction.atomic
def issue_management_key(
    *, account: Account, name: str, actor: User | None = None, network: str = ""
) -> tuple[ManagementKey, str]:
    secret = keyformat.generate(keyformat.MANAGEMENT_PREFIX)
    key = ManagementKey.objects.create(
        account=account,
        created_by=actor or account.user,
        name=name.strip()[:100] or "default",
        digest=digest(secret),
        prefix=keyformat.display_prefix(secret),
        last4=keyformat.last_four(secret),
    )
    _audit(key, audit.Action.MANAGEMENT_KEY_CREATED, actor=actor, network=network)
    return key, secret


@transaction.atomic
def revoke_management_key(
    *, key: ManagementKey, actor: User | None = None, network: str = "", reason: str = ""
) -> None:
    """For good: nothing clears ``revoked_at`` again."""
    revoked = ManagementKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        _audit(
            key, audit.Action.MANAGEMENT_KEY_REVOKED, actor=actor, network=network, reason=reason
        )


def management_key_for(secret: str) -> ManagementKey | None:
    if not keyformat.is_well_formed(secret, keyformat.MANAGEMENT_PREFIX):
        return None
    # A deactivated user's management keys are refused with their sessions; a key acts as
    # its maker (in an organization, with the maker's role there).
    return (
        ManagementKey.objects.filter(
            digest=digest(secret), revoked_at__isnull=True, created_by__is_active=True
        )
        .select_related("account__organization", "created_by")
        .first()
    )
