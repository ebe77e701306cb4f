from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from core import byok, keyformat
from lib.money import MONEY
from lib.secrets import EncryptedField

# The fields of ApiKey that limit what a key may do: edited by the limits form and the API,
# carried over by rotation, exported with the account.
LIMIT_FIELDS = (
    "allowed_models",
    "allowed_ips",
    "expires_at",
    "rpm_limit",
    "tpm_limit",
    "spend_cap",
    "spend_cap_period",
    "routing",
)


class ApiKey(models.Model):
    """Only the HMAC digest and a display prefix/last four are kept: the secret is shown once."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        REVOKED = "revoked", _("Revoked")

    class Period(models.TextChoices):
        DAY = "day", _("per day")
        WEEK = "week", _("per week")
        MONTH = "month", _("per month")
        TOTAL = "total", _("in total")

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="api_keys"
    )
    # Who made it: in an organization, a member's keys are theirs to manage, count against
    # their spend cap and are revoked when they leave. Null only for a user since deleted.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    name = models.CharField(_("name"), max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    last4 = models.CharField(max_length=4)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Where it was last used from, coarsened (an IPv4 /24 or IPv6 /48), never the address.
    last_used_from = models.CharField(max_length=64, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replaces"
    )

    # Limits, enforced by the relay. Empty means unlimited.
    allowed_models = models.JSONField(_("allowed models"), default=list, blank=True)
    allowed_ips = models.JSONField(
        _("allowed IP addresses or CIDR ranges"), default=list, blank=True
    )
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    rpm_limit = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(_("tokens per minute"), null=True, blank=True)
    spend_cap = models.DecimalField(_("spend cap (USD)"), **MONEY, null=True, blank=True)
    spend_cap_period = models.CharField(
        _("spend cap period"), max_length=10, choices=Period.choices, default=Period.MONTH
    )
    # Provider routing defaults (OpenRouter's ``provider`` object, as core.routing.parse
    # normalises it): a request's own ``provider`` fields override them field by field.
    routing = models.JSONField(_("routing preferences"), default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return keyformat.masked(self.prefix, self.last4)

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class ManagementKey(models.Model):
    """A key for scripts that manage API keys through the JSON API. It cannot call models:
    the relay accepts only ``tp-sk-`` keys. Stored like API keys: a digest and a display
    prefix/last four, the secret shown once."""

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="management_keys"
    )
    # Who made it; in an organization the key acts with its maker's role there.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    name = models.CharField(_("name"), max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    last4 = models.CharField(max_length=4)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return keyformat.masked(self.prefix, self.last4)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ProviderCredential(models.Model):
    """An account's own API key for a provider of the catalog (BYOK, ``core.byok``). Write-only:
    kept as a Fernet token under ``TP_SECRETS_KEYS`` like the operator's provider keys; pages and
    the API show the provider, the mode, the last four characters, when it was checked and who
    added it, never the key. The relay learns it through Redis (``keys.byok.push``)."""

    class Mode(models.TextChoices):
        PRIORITISED = byok.PRIORITISED, _("Prioritised: my key first, then the site's keys")
        ALWAYS = byok.ALWAYS, _("Always: only my key")

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="provider_credentials"
    )
    provider = models.ForeignKey(
        "catalog.Provider", on_delete=models.CASCADE, related_name="credentials"
    )
    mode = models.CharField(
        _("mode"), max_length=12, choices=Mode.choices, default=Mode.PRIORITISED
    )
    api_key = EncryptedField(_("API key"))
    last4 = models.CharField(max_length=4, blank=True)
    checked_at = models.DateTimeField()
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider"], name="provider_credential_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} (…{self.last4})"

    @property
    def masked(self) -> str:
        return f"…{self.last4}" if self.last4 else "…"
