"""Organizations (issue 15): a team that shares a balance, keys and usage. The writes, each in
one transaction with its audit event; what other apps must act on is announced by signals
(``accounts.signals.member_removed``: keys revokes the member's keys on every relay;
``member_cap_changed``: keys republishes them with the new cap).

Invitations travel as signed links that expire (``INVITATION_DAYS``); the link names the
invitation, whose row says whether it is still pending, so a revoked or answered invitation's
link is dead even before it expires. Only the invited address may accept it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from . import audit, signals
from .emails import lookup_key
from .language import in_language_of
from .models import Account, Invitation, Membership, Organization, Role, User

INVITATION_DAYS = 7
_SALT = "accounts.organizations.invitation"


class OrganizationError(ValueError):
    """A change the rules refuse (the message says why, for the page or the API)."""


# ---- creating and naming ------------------------------------------------------------------


@transaction.atomic
def create(*, owner: User, name: str, network: str = "") -> Organization:
    """A new organization with its own (empty) account and ``owner`` as its owner. There is
    no limit on how many a user makes."""
    organization = Organization.objects.create(name=name.strip())
    account = Account.objects.create(organization=organization)
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    audit.record(
        account=account,
        action=audit.Action.ORGANIZATION_CREATED,
        actor=owner,
        network=network,
        target=organization.name,
    )
    return organization


@transaction.atomic
def rename(*, organization: Organization, name: str, actor: User, network: str = "") -> None:
    old = organization.name
    organization.name = name.strip()
    organization.save(update_fields=["name"])
    audit.record(
        account=organization.account,
        action=audit.Action.ORGANIZATION_RENAMED,
        actor=actor,
        network=network,
        target=organization.name,
        details={"old": old, "new": organization.name},
    )


# ---- invitations ----------------------------------------------------------------------------


def invitation_token(invitation: Invitation) -> str:
    return signing.dumps({"i": invitation.pk}, salt=_SALT, compress=True)


def invitation_of(token: str) -> Invitation:
    """The pending invitation a link names; OrganizationError if the link is forged, expired,
    or its invitation was revoked or already answered."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=timedelta(days=INVITATION_DAYS))
    except signing.SignatureExpired:
        raise OrganizationError(_("This invitation has expired. Ask for a new one.")) from None
    except signing.BadSignature:
        raise OrganizationError(_("This invitation link is not valid.")) from None
    invitation = (
        Invitation.objects.select_related("organization")
        .filter(pk=int(data.get("i") or 0) if isinstance(data, dict) else 0)
        .first()
    )
    if invitation is None or invitation.status != Invitation.Status.PENDING:
        raise OrganizationError(_("This invitation is no longer open."))
    return invitation


def _send_invitation(invitation: Invitation, inviter: User) -> None:
    url = settings.TP_SITE_URL + reverse("invitation", args=[invitation_token(invitation)])
    send_mail(
        _("[TokenPapa] You are invited to %(organization)s")
        % {"organization": invitation.organization.name},
        _(
            "%(inviter)s invites you to join %(organization)s on TokenPapa as %(role)s.\n\n"
            "Accept (sign in or sign up with this address first): %(url)s\n\n"
            "The link works for %(days)s days."
        )
        % {
            "inviter": inviter.email,
            "organization": invitation.organization.name,
            "role": Role(invitation.role).label,
            "url": url,
            "days": INVITATION_DAYS,
        },
        None,
        [invitation.email],
    )


@transaction.atomic
def invite(
    *, organization: Organization, email: str, role: str, actor: User, network: str = ""
) -> Invitation:
    """Invites ``email`` with ``role`` (not owner) and mails the link once committed. A second
    invitation to the same address replaces the pending one (its link dies)."""
    if role not in Role.values or role == Role.OWNER:
        raise OrganizationError(_("Choose a role other than owner."))
    if Membership.objects.filter(
        organization=organization, user__email__iexact=lookup_key(email)
    ).exists():
        raise OrganizationError(_("%(email)s is already a member.") % {"email": email})
    Invitation.objects.filter(
        organization=organization, email__iexact=email, status=Invitation.Status.PENDING
    ).update(status=Invitation.Status.REVOKED, answered_at=timezone.now())
    invitation = Invitation.objects.create(
        organization=organization, email=email, role=role, invited_by=actor
    )
    audit.record(
        account=organization.account,
        action=audit.Action.INVITATION_SENT,
        actor=actor,
        network=network,
        target=email,
        details={"role": role},
    )

    def mail() -> None:
        with in_language_of(actor):
            _send_invitation(invitation, actor)

    transaction.on_commit(mail)
    return invitation


@transaction.atomic
def revoke_invitation(*, invitation: Invitation, actor: User, network: str = "") -> None:
    updated = Invitation.objects.filter(pk=invitation.pk, status=Invitation.Status.PENDING).update(
        status=Invitation.Status.REVOKED, answered_at=timezone.now()
    )
    if updated:
        audit.record(
            account=invitation.organization.account,
            action=audit.Action.INVITATION_REVOKED,
            actor=actor,
            network=network,
            target=invitation.email,
        )


def _same_address(user: User, email: str) -> bool:
    return lookup_key(user.email) == lookup_key(email)


@transaction.atomic
def accept(*, invitation: Invitation, user: User, network: str = "") -> Membership:
    """``user`` joins with the invitation's role. Only the invited address may accept."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != Invitation.Status.PENDING:
        raise OrganizationError(_("This invitation is no longer open."))
    if not _same_address(user, invitation.email):
        raise OrganizationError(
            _("This invitation is for %(email)s. Sign in with that address to accept it.")
            % {"email": invitation.email}
        )
    organization = invitation.organization
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": invitation.role}
    )
    invitation.status = Invitation.Status.ACCEPTED
    invitation.answered_at = timezone.now()
    invitation.save(update_fields=["status", "answered_at"])
    account = organization.account
    audit.record(
        account=account,
        action=audit.Action.INVITATION_ACCEPTED,
        actor=user,
        network=network,
        target=invitation.email,
    )
    if created:
        audit.record(
            account=account,
            action=audit.Action.MEMBER_ADDED,
            actor=user,
            network=network,
            target=user.email,
            details={"role": membership.role},
        )
    return membership


# ---- members --------------------------------------------------------------------------------


def _locked(membership: Membership) -> Membership:
    return (
        Membership.objects.select_for_update()
        .select_related("organization", "user")
        .get(pk=membership.pk)
    )


def _leaves(membership: Membership, action: str, actor: User, network: str) -> None:
    organization = membership.organization
    user = membership.user
    membership.delete()
    audit.record(
        account=organization.account,
        action=action,
        actor=actor,
        network=network,
        target=user.email,
        details={"role": membership.role},
    )
    signals.member_removed.send(
        sender=Membership, account=organization.account, user=user, actor=actor, network=network
    )


@transaction.atomic
def remove(*, membership: Membership, actor: User, network: str = "") -> None:
    """Takes a member out (never the owner: ownership moves first). Their keys in the
    organization are revoked in the same transaction, so every relay refuses them within a
    second of the commit."""
    membership = _locked(membership)
    if membership.role == Role.OWNER:
        raise OrganizationError(_("The owner cannot be removed. Transfer ownership first."))
    _leaves(membership, audit.Action.MEMBER_REMOVED, actor, network)


@transaction.atomic
def leave(*, membership: Membership, network: str = "") -> None:
    membership = _locked(membership)
    if membership.role == Role.OWNER:
        raise OrganizationError(_("The owner cannot leave. Transfer ownership first."))
    _leaves(membership, audit.Action.MEMBER_LEFT, membership.user, network)


@transaction.atomic
def change_role(*, membership: Membership, role: str, actor: User, network: str = "") -> None:
    """Gives a member another role (admin, member or billing; owner only by a transfer)."""
    membership = _locked(membership)
    if role not in Role.values or role == Role.OWNER:
        raise OrganizationError(_("Use “Transfer ownership” to make someone the owner."))
    if membership.role == Role.OWNER:
        raise OrganizationError(_("The owner's role changes only by a transfer of ownership."))
    if membership.role == role:
        return
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit.record(
        account=membership.organization.account,
        action=audit.Action.MEMBER_ROLE_CHANGED,
        actor=actor,
        network=network,
        target=membership.user.email,
        details={"old": old, "new": role},
    )


@transaction.atomic
def set_cap(
    *,
    membership: Membership,
    cap: Decimal | None,
    period: str,
    actor: User,
    network: str = "",
) -> None:
    """A member's spend cap over all their keys in the organization, per period; None lifts
    it. The relay checks it with every hold (key cap ≤ member cap ≤ balance)."""
    membership = _locked(membership)
    before = {"cap": membership.spend_cap, "period": membership.spend_cap_period}
    membership.spend_cap = cap
    membership.spend_cap_period = period
    membership.save(update_fields=["spend_cap", "spend_cap_period"])
    after = {"cap": cap, "period": period}
    changed = audit.changes(before, after)
    if not changed:
        return
    audit.record(
        account=membership.organization.account,
        action=audit.Action.MEMBER_CAP_CHANGED,
        actor=actor,
        network=network,
        target=membership.user.email,
        details=changed,
    )
    signals.member_cap_changed.send(sender=Membership, membership=membership)


@transaction.atomic
def transfer(*, organization: Organization, to: Membership, actor: User, network: str = "") -> None:
    """Makes member ``to`` the owner; the old owner stays on as an admin."""
    owner = Membership.objects.select_for_update().get(organization=organization, role=Role.OWNER)
    to = _locked(to)
    if to.organization_id != organization.pk:
        raise OrganizationError(_("Choose a member of this organization."))
    if to.pk == owner.pk:
        return
    owner.role = Role.ADMIN
    owner.save(update_fields=["role"])
    to.role = Role.OWNER
    to.save(update_fields=["role"])
    audit.record(
        account=organization.account,
        action=audit.Action.OWNERSHIP_TRANSFERRED,
        actor=actor,
        network=network,
        target=to.user.email,
        details={"from": owner.user.email, "to": to.user.email},
    )


# ---- reading -------------------------------------------------------------------------------


def memberships_of(user: Any) -> list[Membership]:
    """The organizations ``user`` belongs to, by name (the switcher's list)."""
    if not getattr(user, "is_authenticated", False):
        return []
    return list(
        Membership.objects.filter(user=user)
        .select_related("organization__account")
        .order_by("organization__name", "organization_id")
    )


def contacts(account: Account) -> list[User]:
    """Who hears about an account's money (low balance, payments, receipts): a personal
    account's user; an organization's owner and billing members."""
    if account.user_id is not None:
        return [account.user]  # type: ignore[list-item]
    return [
        m.user
        for m in Membership.objects.filter(
            organization_id=account.organization_id or 0, role__in=(Role.OWNER, Role.BILLING)
        )
        .select_related("user")
        .order_by("role", "pk")
        if m.user.is_active
    ]


def billing_email(account: Account) -> str:
    """The address payments and receipts name for an account: its user's, or the
    organization's owner's."""
    found = contacts(account)
    return found[0].email if found else ""
