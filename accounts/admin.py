from __future__ import annotations

from typing import Any

from allauth.account.admin import EmailAddressAdmin as BaseEmailAddressAdmin
from allauth.account.models import EmailAddress
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from lib.admin import ReadOnlyAdminMixin

from . import services
from .emails import NormalizedEmailField
from .models import Account, AuditEvent, Invitation, Membership, Organization, User

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
    actions = ["deactivate", "reactivate"]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data:
            # Sessions end and the user's keys leave (or return to) the relays.
            services.set_active(user=obj, active=obj.is_active)

    @admin.action(
        description=_("Deactivate selected users (sign them out, suspend their keys)"),
        permissions=["change"],
    )
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description=_("Reactivate selected users"), permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[User], *, active: bool) -> None:
        users = list(queryset)
        for user in users:
            services.set_active(user=user, active=active)
        message = (
            gettext("Reactivated %(count)d user(s).")
            if active
            else gettext("Deactivated %(count)d user(s).")
        )
        self.message_user(request, message % {"count": len(users)}, messages.SUCCESS)


admin.site.unregister(EmailAddress)


@admin.register(EmailAddress)
class EmailAddressAdmin(BaseEmailAddressAdmin):
    formfield_overrides = NORMALIZED_EMAIL_FIELDS


@admin.register(Account)
class AccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Accounts are made with their users; money moves through the ledger, never here."""

    list_display = ("pk", "user", "created_at")
    search_fields = ("user__email",)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit log is append-only: operators read it here; nobody adds, edits or deletes."""

    list_display = ("created_at", "account", "actor_label", "action", "target", "network")
    list_filter = ("action",)
    search_fields = ("account__user__email", "account__organization__name", "actor_label", "target")
    date_hierarchy = "created_at"
    list_select_related = ("account__user", "account__organization")
    # The log runs long: no COUNT(*) of the whole table on every page.
    show_full_result_count = False


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Organizations change through their owners and admins (accounts.organizations, which
    audits every change and revokes a removed member's keys); operators read them here."""


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("user", "role", "spend_cap", "spend_cap_period", "joined_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Organization)
class OrganizationAdmin(ReadOnly):
    list_display = ("name", "account", "created_at")
    search_fields = ("name", "memberships__user__email")
    inlines = (MembershipInline,)


@admin.register(Invitation)
class InvitationAdmin(ReadOnly):
    formfield_overrides = NORMALIZED_EMAIL_FIELDS
    list_display = ("email", "organization", "role", "status", "created_at", "answered_at")
    list_filter = ("status", "role")
    search_fields = ("email", "organization__name")
