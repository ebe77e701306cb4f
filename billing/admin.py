from django.contrib import admin

from .models import Account, LedgerEntry, UsageEvent


class ReadOnly(admin.ModelAdmin):
    """Money rows are appended by services only; the admin shows them."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Account)
class AccountAdmin(ReadOnly):
    list_display = ("pk", "user", "created_at")
    search_fields = ("user__email",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnly):
    list_display = ("account", "seq", "kind", "amount", "balance_after", "reference", "created_at")
    list_filter = ("kind",)
    search_fields = ("account__user__email", "reference")


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnly):
    list_display = (
        "request_id",
        "account",
        "model_id",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "estimated",
        "status",
        "started_at",
    )
    list_filter = ("status", "estimated", "model_id")
    search_fields = ("request_id", "account__user__email")
