from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

MONEY = {"max_digits": 20, "decimal_places": 9}


class Account(models.Model):
    """Whose balance it is. Today one per user; the ledger and keys hang off the account so
    that teams can share one later without moving money rows."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="account"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"account {self.pk} ({self.user})"


class LedgerEntry(models.Model):
    """Append-only. ``seq`` counts an account's entries without gaps and ``balance_after`` is
    the running sum, both written under the account's row lock, so the newest entry holds the
    balance and ``seq`` orders writes to Redis."""

    class Kind(models.TextChoices):
        TOPUP = "topup", _("Top-up")
        ADJUSTMENT = "adjustment", _("Operator adjustment")
        USAGE = "usage", _("Usage")
        USAGE_REFUND = "usage_refund", _("Usage refund")
        REFUND = "refund", _("Refund")
        CHARGEBACK = "chargeback", _("Chargeback")
        VOUCHER = "voucher", _("Voucher")

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = models.DecimalField(**MONEY)
    balance_after = models.DecimalField(**MONEY)
    reference = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "seq"], name="ledger_account_seq"),
            models.CheckConstraint(condition=~models.Q(amount=0), name="ledger_amount_nonzero"),
        ]
        ordering = ["account", "-seq"]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} (#{self.seq})"


class UsageEvent(models.Model):
    """One relayed request. Never its content."""

    class Status(models.TextChoices):
        OK = "ok", _("Completed")
        CLIENT_CLOSED = "client_closed", _("Client disconnected")
        UPSTREAM_CUT = "upstream_cut", _("Upstream cut off")
        ERROR = "error", _("Error")

    request_id = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="usage")
    key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.SET_NULL, null=True, related_name="usage"
    )
    model_id = models.CharField(max_length=100)
    provider = models.CharField(max_length=50)
    upstream_model = models.CharField(max_length=150, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))
    price_version = models.PositiveIntegerField(null=True)
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OK)
    http_status = models.PositiveSmallIntegerField(default=200)
    streamed = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True)
    ledger_entry = models.ForeignKey(
        LedgerEntry, on_delete=models.PROTECT, null=True, related_name="usage_events"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["account", "-started_at"], name="usage_account_time")]

    def __str__(self) -> str:
        return self.request_id


class DailyUsage(models.Model):
    """Rollup kept by the worker in the same transaction as the events, so charts read a few
    rows per day instead of scanning the request log."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    key = models.ForeignKey("keys.ApiKey", on_delete=models.PROTECT)
    model_id = models.CharField(max_length=100)
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "day", "key", "model_id"], name="daily_usage_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model_id}"
