from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from lib.money import MONEY

from .emails import normalize_email


class EmailUserManager(UserManager["User"]):
    """Email is the only identifier: there is no username."""

    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(  # type: ignore[override]
        self, email: str, password: str | None = None, **extra: Any
    ) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(  # type: ignore[override]
        self, email: str, password: str | None = None, **extra: Any
    ) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    username = None  # type: ignore[assignment]
    first_name = None  # type: ignore[assignment]
    last_name = None  # type: ignore[assignment]
    email = models.EmailField(_("email address"), unique=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    # The language their pages and mail are in (accounts/language.py); empty until their first
    # signed-in request.
    language = models.CharField(
        _("language"), max_length=10, blank=True, choices=settings.LANGUAGES
    )
    # An IANA zone name (accounts/timezones.py) in which their pages count days; empty: the
    # browser's zone where it says one, else UTC.
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects = EmailUserManager()  # type: ignore[misc]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    """A team that shares one balance (its ``account``), keys, usage and receipts (issue 15).
    Made by ``accounts.organizations.create`` with its account and its owner's membership."""

    name = models.CharField(_("name"), max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Account(models.Model):
    """Whose balance it is: a user's personal account, or an organization's. The ledger, keys,
    usage and receipts hang off the account, so a team shares them without moving money rows.
    A user's is made with its user (signals.py), an organization's with the organization;
    billing gives it its place in the relay's view and any signup credit."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="account",
        null=True,
        blank=True,
    )
    organization = models.OneToOneField(
        Organization,
        on_delete=models.PROTECT,
        related_name="account",
        null=True,
        blank=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, organization__isnull=True)
                | models.Q(user__isnull=True, organization__isnull=False),
                name="account_has_one_holder",
            )
        ]

    def __str__(self) -> str:
        holder = self.organization if self.organization_id else self.user
        return f"account {self.pk} ({holder})"

    @property
    def name(self) -> str:
        """What the switcher and the pages call it: the organization's name, or "Personal"."""
        if self.organization_id:
            return self.organization.name  # type: ignore[union-attr]
        return str(_("Personal"))


class Role(models.TextChoices):
    """What a member may do in an organization (``accounts.roles`` holds the rules)."""

    OWNER = "owner", _("Owner")
    ADMIN = "admin", _("Admin")
    MEMBER = "member", _("Member")
    BILLING = "billing", _("Billing")


class SpendPeriod(models.TextChoices):
    """The same periods as an API key's cap, counted the same way by the relay."""

    DAY = "day", _("per day")
    WEEK = "week", _("per week")
    MONTH = "month", _("per month")
    TOTAL = "total", _("in total")


class Membership(models.Model):
    """A user in an organization, with a role and an optional spend cap over their keys (key
    cap ≤ member cap ≤ organization balance, all checked by the relay with the hold). One owner
    per organization (a partial unique index)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.MEMBER)
    spend_cap = models.DecimalField(_("spend cap (USD)"), **MONEY, null=True, blank=True)
    spend_cap_period = models.CharField(
        _("cap period"), max_length=10, choices=SpendPeriod.choices, default=SpendPeriod.MONTH
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("organization", "user", name="membership_unique"),
            models.UniqueConstraint(
                "organization",
                condition=models.Q(role="owner"),
                name="membership_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Invitation(models.Model):
    """An invitation to an organization, sent by email as a signed link that expires
    (``accounts.organizations.invitation_token``). Accepting needs the invited address."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        ACCEPTED = "accepted", _("Accepted")
        REVOKED = "revoked", _("Revoked")

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(_("email address"))
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.MEMBER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "organization",
                "email",
                condition=models.Q(status="pending"),
                name="invitation_one_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization} ({self.status})"


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    """The log is append-only: no bulk change or removal through the app."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError("audit events are never changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("audit events are never deleted")


class AuditEvent(models.Model):
    """Who did what to an account, when, from which network (issue 15). Keyed by the account,
    not the user: an organization will be an account with members, and its owners and admins
    will read the same log. Written only by ``accounts.audit.record``; never a secret in any
    column (a key is named by its display prefix)."""

    class Action(models.TextChoices):
        KEY_CREATED = "key.created", _("API key created")
        KEY_RENAMED = "key.renamed", _("API key renamed")
        KEY_LIMITS_CHANGED = "key.limits_changed", _("API key limits changed")
        KEY_ROUTING_CHANGED = "key.routing_changed", _("API key routing changed")
        KEY_ROTATED = "key.rotated", _("API key rotated")
        KEY_REVOKED = "key.revoked", _("API key revoked")
        MANAGEMENT_KEY_CREATED = "management_key.created", _("Management key created")
        MANAGEMENT_KEY_REVOKED = "management_key.revoked", _("Management key revoked")
        BYOK_ADDED = "byok.added", _("Provider key added")
        BYOK_REPLACED = "byok.replaced", _("Provider key replaced")
        BYOK_REMOVED = "byok.removed", _("Provider key removed")
        TOPUP_CREDITED = "topup.credited", _("Top-up credited")
        VOUCHER_REDEEMED = "voucher.redeemed", _("Voucher redeemed")
        CREDIT_GRANTED = "credit.granted", _("Balance adjusted by the operator")
        PASSWORD_CHANGED = "auth.password_changed", _("Password changed")
        EMAIL_CHANGED = "auth.email_changed", _("Primary email address changed")
        TWO_FACTOR_ENABLED = "auth.2fa_enabled", _("Second factor added")
        TWO_FACTOR_DISABLED = "auth.2fa_disabled", _("Second factor removed")
        TIME_ZONE_CHANGED = "account.time_zone_changed", _("Time zone changed")
        ORGANIZATION_CREATED = "organization.created", _("Organization created")
        ORGANIZATION_RENAMED = "organization.renamed", _("Organization renamed")
        INVITATION_SENT = "invitation.sent", _("Invitation sent")
        INVITATION_REVOKED = "invitation.revoked", _("Invitation revoked")
        INVITATION_ACCEPTED = "invitation.accepted", _("Invitation accepted")
        MEMBER_ADDED = "member.added", _("Member added")
        MEMBER_REMOVED = "member.removed", _("Member removed")
        MEMBER_LEFT = "member.left", _("Member left")
        MEMBER_ROLE_CHANGED = "member.role_changed", _("Member's role changed")
        MEMBER_CAP_CHANGED = "member.cap_changed", _("Member's spend cap changed")
        OWNERSHIP_TRANSFERRED = "ownership.transferred", _("Ownership transferred")

    # Who acted when no user did: the operator (an adjustment) or the system (a payment
    # provider's webhook). A user's label is their address, which holds an "@".
    OPERATOR = "operator"
    SYSTEM = "system"

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="audit_events", db_index=False
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    # The actor's address at the time, so that the row still reads after they change it or
    # leave; or OPERATOR / SYSTEM.
    actor_label = models.CharField(_("actor"), max_length=254)
    action = models.CharField(_("action"), max_length=64, choices=Action.choices)
    target = models.CharField(_("target"), max_length=200, blank=True)
    network = models.CharField(_("network"), max_length=64, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    objects = AuditQuerySet.as_manager()

    class Meta:
        indexes = [
            # The log's pages: one account's events, newest first, by keyset on (time, id).
            models.Index(
                "account", models.F("created_at").desc(), models.F("id").desc(), name="audit_page"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label} on account {self.account_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("audit events are never changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("audit events are never deleted")
