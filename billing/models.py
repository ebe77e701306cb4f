from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar

from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from lib.money import MONEY


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

    # Indexed by ledger_account_seq, whose first column it is.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
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

    # The columns that say what a request used and how it ended, in the order the request log,
    # its CSV, the usage API and the worker's insert list them (each prefixes its own).
    COUNTS: ClassVar[tuple[str, ...]] = (
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "reasoning_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "images",
        "audio_ms",
    )
    OUTCOME: ClassVar[tuple[str, ...]] = (
        "price_version",
        "estimated",
        "status",
        "http_status",
        "streamed",
        "finish_reason",
        "byok",
    )
    RESULT: ClassVar[tuple[str, ...]] = (
        *COUNTS,
        "cost",
        "unbilled",
        *OUTCOME,
        "duration_ms",
        "ttfb_ms",
    )

    # Unique by a constraint in Meta, not ``unique=True``, which on PostgreSQL would add a second
    # (LIKE-pattern) index that no query uses; every index is paid for on each usage insert.
    request_id = models.CharField(max_length=64)
    # No foreign key constraints in the database on the account, the key and the ledger entry
    # (migration 0004): each would cost an index lookup per inserted row, and the usage worker
    # (``usage.record_batch``), the only writer, resolves them itself in the transaction that
    # inserts the rows: it holds the account's row lock, records a key it does not find as
    # none, and inserts the ledger entry the rows name. Nothing deletes them in between: an
    # account with usage is protected (by the ORM, below), keys are revoked, never deleted
    # (a key deleted by hand has its events' key set to none by the ORM), and the ledger is
    # append-only.
    # Indexed by usage_account_time, whose first column it is.
    account = models.ForeignKey(
        Account,
        on_delete=models.PROTECT,
        related_name="usage",
        db_index=False,
        db_constraint=False,
    )
    # Indexed: a key's page lists its latest requests.
    key = models.ForeignKey(
        "keys.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        related_name="usage",
        db_constraint=False,
    )
    model_id = models.CharField(max_length=150)
    provider = models.CharField(max_length=50)
    upstream_model = models.CharField(max_length=150, blank=True)
    # prompt_tokens counts the whole prompt, its cached, cache-written and audio tokens
    # included; completion_tokens the whole output, its reasoning and audio tokens included.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)  # to a 5-minute cache
    cache_write_1h_tokens = models.PositiveIntegerField(default=0)  # to a 1-hour cache
    reasoning_tokens = models.PositiveIntegerField(default=0)
    input_audio_tokens = models.PositiveIntegerField(default=0)
    output_audio_tokens = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    audio_ms = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))
    # What the upstream's usage came to above the request's hold: never charged to the account
    # (a hold is the most a request can cost it); the operator bears it. Non-zero only when an
    # upstream reported more than the request could use, and shown in the admin.
    unbilled = models.DecimalField(**MONEY, default=Decimal(0))
    price_version = models.PositiveIntegerField(null=True)
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OK)
    http_status = models.PositiveSmallIntegerField(default=200)
    streamed = models.BooleanField(default=False)
    # Why the answer ended, in OpenAI's words (stop, length, tool_calls, content_filter; an
    # Anthropic upstream's stop_reason is mapped to them, a word neither knows is kept as the
    # upstream said it). Empty when the upstream said nothing (a cut-off stream, an embedding).
    finish_reason = models.CharField(max_length=32, blank=True, default="", db_default="")
    # Served with the account's own provider key (BYOK, core.byok): ``cost`` is the fee, a
    # share of the list price, not the price.
    byok = models.BooleanField(default=False, db_default=False)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True)
    # Not indexed: read from the event (its request's page), never searched from the entry.
    ledger_entry = models.ForeignKey(
        LedgerEntry,
        on_delete=models.PROTECT,
        null=True,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "-started_at"], name="usage_account_time"),
            # The request log's "what failed?" (a status other than ok): a few per cent of the
            # rows, so a small index that inserts of successful requests never touch.
            models.Index(
                fields=["account", "-started_at"],
                condition=~models.Q(status="ok"),
                name="usage_account_failed",
            ),
        ]
        # On PostgreSQL the table is partitioned by month of ``started_at`` (migration 0003,
        # ``billing.partitions``), and a unique constraint there must hold the partition key: a
        # request is (request_id, started_at). The relay stamps ``started_at`` once, when the
        # request arrives, and every resend of the event (a redelivered task, a replayed spool)
        # carries that same float, so a duplicate still meets this constraint. The primary key
        # is (id, started_at) in SQL; the ORM knows ``id`` alone, which is unique all the same.
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "started_at"], name="usage_request_started"
            )
        ]

    def __str__(self) -> str:
        return self.request_id


class UsageRollup(models.Model):
    """What the rollups count for each (account, time bucket, key, model, provider), summed
    from the usage events by the worker in the same transaction as it records them, so that
    pages read a few rows per bucket instead of raw events (which retention may drop).

    ``key`` is empty for an event whose key is unknown here (it is still billed, so it is
    still counted). ``errors`` counts requests whose status is not ``ok``; ``ttfb_ms`` sums
    the time to first byte of the ``ttfb_count`` requests that had one (average = sum/count),
    ``duration_ms`` that of all of them."""

    key = models.ForeignKey("keys.ApiKey", on_delete=models.PROTECT, null=True)
    model_id = models.CharField(max_length=150)
    provider = models.CharField(max_length=50, default="")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    streamed = models.PositiveBigIntegerField(default=0)
    estimated = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)  # to a 5-minute cache
    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)  # to a 1-hour cache
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    input_audio_tokens = models.PositiveBigIntegerField(default=0)
    output_audio_tokens = models.PositiveBigIntegerField(default=0)
    images = models.PositiveBigIntegerField(default=0)
    audio_ms = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))
    duration_ms = models.PositiveBigIntegerField(default=0)
    ttfb_ms = models.PositiveBigIntegerField(default=0)
    ttfb_count = models.PositiveBigIntegerField(default=0)
    # Of ``requests``, those served with the account's own provider key (BYOK).
    byok = models.PositiveBigIntegerField(default=0, db_default=0)

    class Meta:
        abstract = True


class HourlyUsage(UsageRollup):
    """Usage by UTC hour (``hour`` is the hour's start). Pages show days in the reader's time
    zone from these rows; see ``billing.rollups.local_day_hours`` for the rule in zones whose
    offset is not a whole number of hours. The unique index leads with (account, hour), which
    is the pages' range query."""

    # Indexed by the unique index below, whose first column it is.
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="hourly_usage", db_index=False
    )
    # Not indexed on its own: hourly rows are read by account (the unique index), never by key
    # alone (the key caps read the daily rows), and keys are revoked, never deleted. Every
    # upsert of an hourly row is a new row version, written to each index: one index fewer
    # is a tenth less of the worker's time on a batch of many accounts.
    key = models.ForeignKey("keys.ApiKey", on_delete=models.PROTECT, null=True, db_index=False)
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("account"),
                F("hour"),
                Coalesce(F("key"), Value(0)),
                F("model_id"),
                F("provider"),
                name="hourly_usage_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.model_id}"


class DailyUsage(UsageRollup):
    """Usage by UTC day: the same figures as ``HourlyUsage`` summed by ``day``, for what counts
    by UTC day (key spend caps, the catalog's popularity, reconciliation after retention)."""

    # Indexed by the unique index below, whose first column it is.
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="daily_usage", db_index=False
    )
    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                F("account"),
                F("day"),
                Coalesce(F("key"), Value(0)),
                F("model_id"),
                F("provider"),
                name="daily_usage_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model_id}"


# ---------------------------------------------------------------------------------------------
# Top-ups, provider events, vouchers and the user's billing settings (issue 4)
# ---------------------------------------------------------------------------------------------


class BillingProfile(models.Model):
    """The customer's billing details (printed on receipts) and their balance settings: the
    low-balance alert and auto top-up with a card saved at Stripe."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="profile")
    name = models.CharField(_("name"), max_length=150, blank=True)
    company = models.CharField(_("company"), max_length=150, blank=True)
    address_line1 = models.CharField(_("address"), max_length=200, blank=True)
    address_line2 = models.CharField(_("address (line 2)"), max_length=200, blank=True)
    postal_code = models.CharField(_("postal code"), max_length=20, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    country = models.CharField(_("country"), max_length=100, blank=True)
    vat_id = models.CharField(_("VAT ID"), max_length=40, blank=True)

    # Low-balance email: sent when the available balance falls below the threshold, then not
    # again until the balance has been back at or above it ("once per crossing").
    low_balance_threshold = models.DecimalField(**MONEY, null=True, blank=True)
    low_balance_notified = models.BooleanField(default=False)

    # Auto top-up: an off-session charge of ``auto_topup_amount`` on the saved card when the
    # available balance falls below ``auto_topup_threshold``. Three failures in a row turn it
    # off (and the user is told by email).
    auto_topup_enabled = models.BooleanField(default=False)
    auto_topup_threshold = models.DecimalField(**MONEY, null=True, blank=True)
    auto_topup_amount = models.DecimalField(**MONEY, null=True, blank=True)
    auto_topup_failures = models.PositiveSmallIntegerField(default=0)
    auto_topup_last_error = models.CharField(max_length=300, blank=True)

    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_payment_method_id = models.CharField(max_length=100, blank=True)
    card_brand = models.CharField(max_length=30, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_customer_id"],
                condition=~models.Q(stripe_customer_id=""),
                name="billingprofile_stripe_customer_unique",
            )
        ]

    def __str__(self) -> str:
        return f"billing profile of {self.account}"

    @property
    def has_saved_card(self) -> bool:
        return bool(self.stripe_customer_id and self.stripe_payment_method_id)

    def details(self) -> dict[str, str]:
        """The customer block of a receipt, as it stands now."""
        return {
            "name": self.name,
            "company": self.company,
            "address_line1": self.address_line1,
            "address_line2": self.address_line2,
            "postal_code": self.postal_code,
            "city": self.city,
            "country": self.country,
            "vat_id": self.vat_id,
        }


class Payment(models.Model):
    """One top-up attempt at one provider. ``payments.confirm`` is the only code that credits
    it, under this row's lock, once; the credit is keyed on the provider's payment id."""

    class Provider(models.TextChoices):
        STRIPE = "stripe", _("Card (Stripe)")
        PAYPAL = "paypal", _("PayPal")
        BTCPAY = "btcpay", _("Crypto (BTCPay Server)")

    class Status(models.TextChoices):
        CREATED = "created", _("Created")  # ours only; the customer has not paid yet
        PENDING = "pending", _("Pending")  # the provider has it in progress
        CONFIRMED = "confirmed", _("Paid")  # credited (the only credited state)
        FAILED = "failed", _("Failed")
        CANCELED = "canceled", _("Canceled")
        EXPIRED = "expired", _("Expired")
        NEEDS_REVIEW = "needs_review", _("Needs review")  # e.g. partly paid: an operator decides

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.CREATED, db_index=True
    )
    currency = models.CharField(max_length=3, default="USD")
    amount = models.DecimalField(**MONEY, help_text=_("Credit asked for (USD)."))
    fee = models.DecimalField(**MONEY, default=Decimal(0))
    total = models.DecimalField(**MONEY, help_text=_("What the customer is charged."))
    auto = models.BooleanField(default=False, help_text=_("An automatic top-up."))
    save_card = models.BooleanField(default=False)

    checkout_id = models.CharField(max_length=200, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    provider_payment_id = models.CharField(max_length=200, blank=True)

    amount_received = models.DecimalField(**MONEY, null=True, blank=True)
    credited = models.DecimalField(**MONEY, null=True, blank=True)
    credit_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="payment"
    )
    refunded_gross = models.DecimalField(
        **MONEY, default=Decimal(0), help_text=_("Refunded at the provider (what was charged).")
    )
    reversed = models.DecimalField(
        **MONEY, default=Decimal(0), help_text=_("Taken back from the balance.")
    )
    dispute_status = models.CharField(max_length=40, blank=True)
    status_detail = models.CharField(max_length=300, blank=True)
    billing_details = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The credit is keyed on the provider's payment id (Stripe: the PaymentIntent).
            models.UniqueConstraint(
                fields=["provider", "provider_payment_id"],
                condition=~models.Q(provider_payment_id=""),
                name="payment_provider_payment_unique",
            ),
            models.UniqueConstraint(
                fields=["provider", "checkout_id"],
                condition=~models.Q(checkout_id=""),
                name="payment_provider_checkout_unique",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="payment_amount_pos"),
            models.CheckConstraint(
                condition=~models.Q(status="confirmed") | models.Q(credit_entry__isnull=False),
                name="payment_confirmed_has_credit",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} {self.total} USD ({self.status})"

    @property
    def receipt_number(self) -> str:
        return f"TP-{self.pk:08d}"

    @property
    def is_open(self) -> bool:
        return self.status in {self.Status.CREATED, self.Status.PENDING}

    @property
    def net_credit(self) -> Decimal:
        return (self.credited or Decimal(0)) - self.reversed


class PaymentAdjustment(models.Model):
    """Money a provider took back (refund, chargeback, dispute fee) or gave back (a dispute
    won), each applied once: ``reference`` is unique per provider."""

    class Kind(models.TextChoices):
        REFUND = "refund", _("Refund")
        CHARGEBACK = "chargeback", _("Chargeback")
        DISPUTE_FEE = "dispute_fee", _("Dispute fee")
        REINSTATED = "reinstated", _("Dispute won")

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="adjustments")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    reference = models.CharField(max_length=200)
    gross = models.DecimalField(**MONEY, help_text=_("The provider's figure."))
    amount = models.DecimalField(**MONEY, help_text=_("What moved on the balance (signed)."))
    ledger_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="adjustment"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["payment", "kind", "reference"], name="payment_adjustment_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.reference})"


class WebhookEvent(models.Model):
    """Every verified event a provider sent, stored once (unique provider event id) with what
    became of it, so that a failed one can be seen and replayed."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        PROCESSED = "processed", _("Processed")
        IGNORED = "ignored", _("Ignored")
        FAILED = "failed", _("Failed")

    provider = models.CharField(max_length=20, choices=Payment.Provider.choices)
    event_id = models.CharField(max_length=200)
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField()
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.RECEIVED, db_index=True
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_once")
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.event_id}"


class VoucherBatch(models.Model):
    name = models.CharField(max_length=100)
    amount = models.DecimalField(**MONEY)
    count = models.PositiveIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="voucher_batch_pos")
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.count} × {self.amount} USD)"


class Voucher(models.Model):
    """A code worth ``amount`` once. ``code`` is stored normalised (upper case, no dashes)."""

    batch = models.ForeignKey(VoucherBatch, on_delete=models.PROTECT, related_name="vouchers")
    code = models.CharField(max_length=40, unique=True)
    amount = models.DecimalField(**MONEY)
    expires_at = models.DateTimeField(null=True, blank=True)
    redeemed_by = models.ForeignKey(
        Account, on_delete=models.PROTECT, null=True, blank=True, related_name="vouchers"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    ledger_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="voucher"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="voucher_amount_pos"),
            models.CheckConstraint(
                condition=models.Q(redeemed_by__isnull=True, ledger_entry__isnull=True)
                | models.Q(redeemed_by__isnull=False, ledger_entry__isnull=False),
                name="voucher_redeemed_has_credit",
            ),
        ]

    def __str__(self) -> str:
        return f"voucher …{self.code[-4:]} ({self.amount} USD)"

    @property
    def display_code(self) -> str:
        return "-".join(self.code[i : i + 4] for i in range(0, len(self.code), 4))
