from __future__ import annotations

from typing import Any

from allauth.account.admin import EmailAddressAdmin as BaseEmailAddressAdmin
from allauth.account.models import EmailAddress
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import models

from .emails import NormalizedEmailField
from .models import Account, User

# An address an operator types is stored in the same one form as a signup's (accounts.emails).
NORMALIZED_EMAIL_FIELDS: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
    models.EmailField: {"form_class": NormalizedEmailField}
}


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ("email",)
    list_display = ("email", "name", "is_staff", "is_active", "date_joined")
    search_fields = ("email", "name")
    fieldsets = (
        (None, {"fields": ("email", "password", "name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    formfield_overrides = NORMALIZED_EMAIL_FIELDS


admin.site.unregister(EmailAddress)


@admin.register(EmailAddress)
class EmailAddressAdmin(BaseEmailAddressAdmin):
    formfield_overrides = NORMALIZED_EMAIL_FIELDS


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts are made with their users; money moves through the ledger, never here."""

    list_display = ("pk", "user", "created_at")
    search_fields = ("user__email",)

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
