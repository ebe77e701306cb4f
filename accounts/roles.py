"""Who may do what in an account (issue 15): the one table of roles and what they allow, and
the one question every page and API call asks, ``allows(role, capability)``.

A personal account's user is its owner. In an organization:

- **owner** (one per organization): everything, including renaming, transferring ownership
  and the organization's own settings;
- **admin**: members and invitations, every key, all usage and the audit log;
- **member**: their own keys and their own keys' usage;
- **billing**: top-ups, the ledger, receipts, vouchers and billing details.

Everyone sees the dashboard; what it shows follows the same rules.
"""

from __future__ import annotations

from typing import Any

from .models import Account, Membership, Role

# Capabilities: the things a page or an endpoint needs.
KEYS_OWN = "keys.own"  # create keys, manage the keys one made
KEYS_ALL = "keys.all"  # manage every key of the account (and its management keys)
USAGE_OWN = "usage.own"  # the usage of the keys one made
USAGE_ALL = "usage.all"  # all the account's usage
BILLING = "billing"  # top-ups, ledger, receipts, vouchers, billing details, balance alerts
MEMBERS = "members"  # invite, remove, change roles and member caps
AUDIT = "audit"  # read the audit log
OWNER = "owner"  # rename, transfer ownership

RULES: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(
        {KEYS_OWN, KEYS_ALL, USAGE_OWN, USAGE_ALL, BILLING, MEMBERS, AUDIT, OWNER}
    ),
    Role.ADMIN: frozenset({KEYS_OWN, KEYS_ALL, USAGE_OWN, USAGE_ALL, MEMBERS, AUDIT}),
    Role.MEMBER: frozenset({KEYS_OWN, USAGE_OWN}),
    Role.BILLING: frozenset({BILLING}),
}

# Roles an admin may give or take: never the owner's, which only a transfer moves.
ASSIGNABLE = (Role.ADMIN, Role.MEMBER, Role.BILLING)


def allows(role: str | None, capability: str) -> bool:
    return role is not None and capability in RULES.get(role, frozenset())


def role_in(user: Any, account: Account) -> str | None:
    """``user``'s role in ``account``: owner of their personal account, their membership's role
    in an organization's, None for anyone else (or a signed-out visitor)."""
    if not getattr(user, "is_authenticated", False):
        return None
    if account.organization_id is None:
        return Role.OWNER if account.user_id == user.pk else None
    role: str | None = (
        Membership.objects.filter(organization_id=account.organization_id, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )
    return role


def can(user: Any, account: Account, capability: str) -> bool:
    return allows(role_in(user, account), capability)
