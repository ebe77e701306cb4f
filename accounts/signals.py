from __future__ import annotations

from typing import Any

from allauth.account import signals as account_signals
from allauth.mfa import signals as mfa_signals
from allauth.mfa.models import Authenticator
from django.db.models.signals import post_save
from django.dispatch import Signal, receiver

from . import audit
from .models import Account, User
from .selectors import account_of

# Sent with ``user`` and ``active`` (bool) by accounts.services.set_active, inside its
# transaction: the apps above (which accounts cannot import) act on a user's deactivation or
# reactivation, e.g. keys suspends or restores the user's API keys on every relay.
active_changed = Signal()
# Sent with ``account``, ``user``, ``actor`` and ``network`` inside the transaction that takes a
# member out of an organization (removed or left): keys revokes the member's keys there.
member_removed = Signal()
# Sent with ``membership`` when a member's spend cap changes: keys republishes their keys'
# records, which carry the cap to the relay.
member_cap_changed = Signal()


@receiver(post_save, sender=User)
def create_account(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    """Every user has an account from the start (billing then gives it its place in the
    relay's view: an empty account is answered 402, not 401)."""
    if created:
        Account.objects.get_or_create(user=instance)


# ---- the audit log's account events, as allauth announces them -------------------------------


def _audit(request: Any, user: User, action: str, **fields: Any) -> None:
    audit.record(
        account=account_of(user),
        action=action,
        actor=user,
        network=audit.network_of(request) if request is not None else "",
        **fields,
    )


@receiver(account_signals.password_changed)
@receiver(account_signals.password_set)
@receiver(account_signals.password_reset)
def audit_password(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    how = {
        account_signals.password_set: "set",
        account_signals.password_reset: "reset",
    }.get(kwargs.get("signal"), "changed")
    _audit(request, user, audit.Action.PASSWORD_CHANGED, details={"how": how})


@receiver(account_signals.email_changed)
def audit_email(
    sender: Any,
    request: Any,
    user: User,
    from_email_address: Any,
    to_email_address: Any,
    **kwargs: Any,
) -> None:
    old = from_email_address.email if from_email_address is not None else ""
    _audit(
        request,
        user,
        audit.Action.EMAIL_CHANGED,
        target=to_email_address.email,
        details={"old": old, "new": to_email_address.email},
    )


# Recovery codes come and go with the first and last other factor: not a factor of their own.
_FACTORS = {Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN}


@receiver(mfa_signals.authenticator_added)
def audit_factor_added(
    sender: Any, request: Any, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    if authenticator.type in _FACTORS:
        _audit(request, user, audit.Action.TWO_FACTOR_ENABLED, target=authenticator.type)


@receiver(mfa_signals.authenticator_removed)
def audit_factor_removed(
    sender: Any, request: Any, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    if authenticator.type in _FACTORS:
        _audit(request, user, audit.Action.TWO_FACTOR_DISABLED, target=authenticator.type)
