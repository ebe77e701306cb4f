from django.contrib import admin

from .models import Model, PriceVersion, Provider


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "api_shape", "base_url")


class PriceInline(admin.TabularInline):
    model = PriceVersion
    extra = 0
    readonly_fields = ("version", "input", "output", "cached_input", "created_at")
    can_delete = False


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "provider", "upstream_model", "context_window", "active")
    list_filter = ("provider", "active")
    inlines = [PriceInline]
