"""Keys in the admin, through keys.services (which push every change to the relays after
commit, evicting their cached copy: within a second everywhere). Keys are issued by their users
(or ``manage.py issuekey``), never here; none is deleted; a revoked key is read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from lib.admin import ReadOnlyAdminMixin

from . import services
from .forms import LimitsForm
from .models import LIMIT_FIELDS, ApiKey, ManagementKey, ProviderCredential


class ApiKeyForm(LimitsForm, forms.ModelForm):  # type: ignore[misc]
    """The name and the limits, with the rules of the owner's own limits form."""

    # Operators edit the routing defaults as the JSON the API takes (the model's field).
    structured_routing = False

    class Meta:
        model = ApiKey
        fields = ["name", *LIMIT_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in [name for name in self.fields if name.startswith("routing_")]:
            del self.fields[name]
        key = self.instance
        if key.pk:
            self.initial["allowed_ips"] = "\n".join(key.allowed_ips or [])
            # A model allowed before it was switched off stays listed, so saving keeps it.
            choices = list(self.fields["allowed_models"].choices)  # type: ignore[attr-defined]
            known = {value for value, _label in choices}
            for model_id in key.allowed_models or []:
                if model_id not in known:
                    choices.append((model_id, model_id))
            self.fields["allowed_models"].choices = choices  # type: ignore[attr-defined]

    def clean_expires_at(self) -> Any:
        # An expiry already past may stay as it is; a new one must be in the future.
        if "expires_at" not in self.changed_data:
            return self.cleaned_data["expires_at"]
        return super().clean_expires_at()


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "masked", "account", "status", "created_at", "last_used_at")
    list_filter = ("status",)
    search_fields = ("name", "prefix", "account__user__email")
    actions = ["revoke_keys"]
    # The digest is not a secret, but there is nothing an operator should do with it.
    fields = (
        "name",
        "masked",
        "account",
        "status",
        *LIMIT_FIELDS,
        "created_at",
        "last_used_at",
        "last_used_from",
        "revoked_at",
        "replaced_by",
    )
    readonly_fields = (
        "masked",
        "account",
        "status",
        "created_at",
        "last_used_at",
        "last_used_from",
        "revoked_at",
        "replaced_by",
    )

    @admin.display(description=_("key"))
    def masked(self, obj: ApiKey) -> str:
        return obj.masked

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not obj.is_active:
            return False  # revoked: read-only, for good
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        changed = set(form.changed_data)
        if "name" in changed:
            services.rename_key(key=obj, name=form.cleaned_data["name"])
        limits = {name: form.cleaned_data[name] for name in LIMIT_FIELDS if name in changed}
        if limits:
            services.update_limits(key=obj, limits=limits)

    @admin.action(description=_("Revoke selected keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for key in queryset.filter(status=ApiKey.Status.ACTIVE):
            services.revoke_key(key=key)
            count += 1
        self.message_user(
            request,
            ngettext("Revoked %(count)d key.", "Revoked %(count)d keys.", count) % {"count": count},
            messages.SUCCESS,
        )


@admin.register(ManagementKey)
class ManagementKeyAdmin(admin.ModelAdmin):
    """Read-only but for revocation, which is for good."""

    list_display = ("name", "masked", "account", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "account__user__email")
    fields = ("name", "masked", "account", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke_keys"]

    @admin.display(description=_("key"))
    def masked(self, obj: ManagementKey) -> str:
        return obj.masked

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list may act (revoke); no management key is ever edited.
        return obj is None and super().has_change_permission(request)

    @admin.action(description=_("Revoke selected management keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ManagementKey]) -> None:
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.revoke_management_key(key=key)
            count += 1
        self.message_user(
            request,
            gettext("Revoked %(count)d management key(s).") % {"count": count},
            messages.SUCCESS,
        )


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Accounts' own provider keys (BYOK), listed for operators: which account, which provider,
    the mode and the last four characters, never the key. Only the account adds, replaces or
    removes one (keys.byok), so that it is checked at the provider and audited."""

    list_display = ("account", "provider", "mode", "masked", "checked_at", "added_by", "created_at")
    list_filter = ("mode", "provider")
    search_fields = ("account__user__email", "account__organization__name", "provider__slug")
    list_select_related = ("account__user", "account__organization", "provider", "added_by")
    fields = ("account", "provider", "mode", "masked", "checked_at", "added_by", "created_at")
    readonly_fields = fields

    @admin.display(description=_("key"))
    def masked(self, obj: ProviderCredential) -> str:
        return obj.masked
