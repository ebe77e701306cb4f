from django.contrib import admin

from .models import ApiKey, ManagementKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "masked", "account", "status", "created_at", "last_used_at")
    list_filter = ("status",)
    search_fields = ("name", "prefix", "account__user__email")
    # The digest is not a secret, but there is nothing an operator should do with it.
    exclude = ("digest",)
    readonly_fields = (
        "prefix",
        "last4",
        "account",
        "status",
        "created_at",
        "last_used_at",
        "revoked_at",
    )


@admin.register(ManagementKey)
class ManagementKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "masked", "account", "created_at", "last_used_at", "revoked_at")
    search_fields = ("name", "prefix", "account__user__email")
    exclude = ("digest",)
    readonly_fields = ("prefix", "last4", "account", "created_at", "last_used_at")
