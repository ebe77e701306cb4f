from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from lib.admin import ReadOnlyAdminMixin

from . import ledger, topups, webhooks
from . import vouchers as voucher_services
from .models import (
    BillingProfile,
    LedgerEntry,
    Payment,
    PaymentAdjustment,
    UsageEvent,
    Voucher,
    VoucherBatch,
    WebhookEvent,
)
from .providers.base import ProviderError


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Money rows are appended by services only; the admin shows them."""


class AdjustmentForm(forms.ModelForm):
    """An operator's credit or debit, by the same service as `manage.py credit`."""

    amount = forms.DecimalField(
        label=_("Amount (USD)"),
        max_digits=20,
        decimal_places=9,
        help_text=_("Positive credits the account; negative debits it."),
    )
    note = forms.CharField(
        label=_("Note"),
        max_length=500,
        help_text=_("Why the balance changes; kept with the entry."),
    )

    class Meta:
        model = LedgerEntry
        fields = ["account", "amount", "note"]

    def clean_amount(self) -> Any:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError(_("An adjustment moves money: give a non-zero amount."))
        return amount


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnly):
    """Entries are appended, never changed or deleted. Adding one is an operator adjustment
    (kind "adjustment"), posted by billing.ledger and published to the relays after commit."""

    form = AdjustmentForm
    autocomplete_fields = ["account"]
    list_display = ("account", "seq", "kind", "amount", "balance_after", "reference", "created_at")
    list_filter = ("kind",)
    search_fields = ("account__user__email", "reference")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return admin.ModelAdmin.has_add_permission(self, request)

    def get_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        if obj is None:
            return ["account", "amount", "note"]
        return [f.name for f in LedgerEntry._meta.fields if f.name != "id"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return self.get_fields(request, obj) if obj is not None else ()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            "title": _("Credit or debit an account"),
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().add_view(request, form_url, {**extra, **(extra_context or {})})

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        data = form.cleaned_data
        entry = ledger.adjust(account=data["account"], amount=data["amount"], note=data["note"])
        obj.pk, obj.seq, obj.balance_after = entry.pk, entry.seq, entry.balance_after


class OverHoldFilter(admin.SimpleListFilter):
    """Requests whose upstream reported more usage than their hold allowed: the excess was not
    charged to the account (the operator bears it). A provider that does this often is
    misreporting, or the catalog's limits for the model are wrong."""

    title = _("usage above the hold")
    parameter_name = "over_hold"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        return [("yes", _("Above the hold (not charged in full)"))]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "yes":
            return queryset.filter(unbilled__gt=0)
        return queryset


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnly):
    list_display = (
        "request_id",
        "account",
        "model_id",
        "provider",
        "prompt_tokens",
        "completion_tokens",
        "images",
        "cost",
        "unbilled",
        "estimated",
        "status",
        "started_at",
    )
    list_filter = (OverHoldFilter, "status", "estimated", "model_id", "provider")
    search_fields = ("request_id", "account__user__email")


# ---- payments, provider events and vouchers ----------------------------------------------


class AdjustmentInline(admin.TabularInline):
    model = PaymentAdjustment
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "reference", "gross", "amount", "ledger_entry", "created_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnly):
    list_display = (
        "receipt_number",
        "account",
        "provider",
        "status",
        "amount",
        "fee",
        "credited",
        "reversed",
        "auto",
        "created_at",
    )
    list_filter = ("status", "provider", "auto", "dispute_status")
    search_fields = ("uuid", "checkout_id", "provider_payment_id", "account__user__email")
    readonly_fields = [f.name for f in Payment._meta.fields]
    inlines = [AdjustmentInline]
    actions = ["check_at_provider"]

    @admin.action(description=_("Check the selected payments at their provider"))
    def check_at_provider(self, request, queryset):  # type: ignore[no-untyped-def]
        done = 0
        for payment in queryset:
            try:
                topups.sync(payment)
                done += 1
            except ProviderError as exc:
                self.message_user(
                    request,
                    gettext("%(receipt)s: %(error)s")
                    % {"receipt": payment.receipt_number, "error": exc},
                    messages.WARNING,
                )
        self.message_user(
            request,
            ngettext("Checked %(count)d payment.", "Checked %(count)d payments.", done)
            % {"count": done},
        )


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnly):
    list_display = (
        "event_id",
        "provider",
        "type",
        "status",
        "attempts",
        "deliveries",
        "received_at",
    )
    list_filter = ("status", "provider", "type")
    search_fields = ("event_id", "type")
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    actions = ["replay"]

    @admin.action(description=_("Replay the selected events (failed or received ones run again)"))
    def replay(self, request, queryset):  # type: ignore[no-untyped-def]
        results = webhooks.replay(list(queryset))
        by_status: dict[str, int] = {}
        for event in results:
            by_status[event.status] = by_status.get(event.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
        self.message_user(request, gettext("Replayed: %(summary)s.") % {"summary": summary})


class VoucherBatchForm(forms.ModelForm):
    class Meta:
        model = VoucherBatch
        fields = ["name", "amount", "count", "expires_at", "note"]


class VoucherInline(admin.TabularInline):
    model = Voucher
    extra = 0
    can_delete = False
    fields = ("display_code", "amount", "redeemed_by", "redeemed_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(VoucherBatch)
class VoucherBatchAdmin(admin.ModelAdmin):
    """Adding a batch generates its codes; a batch is never edited afterwards."""

    form = VoucherBatchForm
    list_display = ("name", "amount", "count", "redeemed", "expires_at", "created_at")
    inlines = [VoucherInline]
    actions = ["export_codes"]

    def redeemed(self, obj: VoucherBatch) -> int:
        return obj.vouchers.filter(redeemed_by__isnull=False).count()

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return obj is None

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return ["name", "amount", "count", "expires_at", "note"] if obj else []

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if change:
            return
        batch = voucher_services.make_batch(
            name=obj.name,
            amount=Decimal(obj.amount),
            count=obj.count,
            expires_at=obj.expires_at,
            note=obj.note,
            created_by=str(request.user),
        )
        obj.pk = batch.pk
        obj.created_at = batch.created_at

    @admin.action(description=_("Export the codes of the selected batches as CSV"))
    def export_codes(self, request, queryset):  # type: ignore[no-untyped-def]
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="vouchers.csv"'
        writer = csv.writer(response)
        writer.writerow(["batch", "code", "amount_usd", "expires_at", "redeemed"])
        for voucher in Voucher.objects.filter(batch__in=queryset).select_related("batch"):
            writer.writerow(
                [
                    voucher.batch.name,
                    voucher.display_code,
                    voucher.amount,
                    voucher.expires_at or "",
                    "yes" if voucher.redeemed_by_id else "no",
                ]
            )
        return response


@admin.register(Voucher)
class VoucherAdmin(ReadOnly):
    list_display = ("display_code", "batch", "amount", "redeemed_by", "redeemed_at", "expires_at")
    list_filter = ("batch",)
    search_fields = ("code",)


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = (
        "account",
        "company",
        "low_balance_threshold",
        "auto_topup_enabled",
        "auto_topup_failures",
        "card_last4",
    )
    search_fields = ("account__user__email", "company", "vat_id")
    readonly_fields = (
        "account",
        "stripe_customer_id",
        "stripe_payment_method_id",
        "card_brand",
        "card_last4",
        "low_balance_notified",
        "auto_topup_failures",
        "auto_topup_last_error",
    )

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
