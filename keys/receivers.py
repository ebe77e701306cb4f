"""What keys does when the apps below it announce something (they cannot import keys)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import receiver

from accounts.models import Account, Membership, User
from accounts.signals import active_changed, member_cap_changed, member_removed

from . import services, sync
from .models import ApiKey, ManagementKey


@receiver(active_changed)
def suspend_or_restore_keys(sender: type[User], user: User, active: bool, **kwargs: Any) -> None:
    """A deactivated user's API keys leave every relay (within a second, like a revocation);
    a reactivated user's come back. Their status stays: a suspension is not a revocation.
    (Management keys are refused by keys.services.management_key_for while the user is
    inactive.)"""
    keys = list(
        ApiKey.objects.filter(created_by=user, status=ApiKey.Status.ACTIVE).select_related(
            "account", "created_by"
        )
    )

    def push_all() -> None:
        for key in keys:
            sync.push(key)

    transaction.on_commit(push_all)


@receiver(member_removed)
def revoke_members_keys(
    sender: type[Membership],
    account: Account,
    user: User,
    actor: User | None = None,
    network: str = "",
    **kwargs: Any,
) -> None:
    """A member taken out of an organization (removed or left) loses their keys there: revoked
    in the same transaction, so every relay refuses them within a second of the commit."""
    for key in ApiKey.objects.filter(account=account, created_by=user, status=ApiKey.Status.ACTIVE):
        services.revoke_key(key=key, actor=actor, network=network, reason="member_removed")
    for management_key in ManagementKey.objects.filter(
        account=account, created_by=user, revoked_at__isnull=True
    ):
        services.revoke_management_key(
            key=management_key, actor=actor, network=network, reason="member_removed"
        )


@receiver(member_cap_changed)
def republish_members_keys(sender: type[Membership], membership: Membership, **kwargs: Any) -> None:
    """A member's cap travels in their keys' records: republished once committed."""
    keys = list(
        ApiKey.objects.filter(
            account__organization_id=membership.organization_id,
            created_by_id=membership.user_id,
            status=ApiKey.Status.ACTIVE,
        ).select_related("account", "created_by")
    )

    def push_all() -> None:
        for key in keys:
            sync.push(key)

    transaction.on_commit(push_all)
