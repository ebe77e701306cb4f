from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import org_views
from accounts import views as account_views
from accounts.auth import admin_login
from billing import views as billing_views
from catalog import views as catalog_views

from . import docs_views, observability, popularity, views

# Staff sign in through allauth like everyone else (its rate limits and second factor); the
# admin's own form would take a password alone. Set before admin.site.urls is read below.
admin.site.login = admin_login  # type: ignore[method-assign]

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "models/",
        catalog_views.model_list,
        {"usage_counts": popularity.requests_by_model},
        name="models",
    ),
    path("models/", include("catalog.urls")),
    path("docs/", docs_views.page, name="docs"),
    path("docs/search/", docs_views.search, name="docs_search"),
    path("docs/<slug:slug>.md", docs_views.page_markdown, name="docs_markdown"),
    path("docs/<slug:slug>/", docs_views.page, name="docs_page"),
    path("llms.txt", docs_views.llms_txt, name="llms_txt"),
    path("llms-full.txt", docs_views.llms_full_txt, name="llms_full_txt"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("keys/", include("keys.urls")),
    path("usage/", billing_views.usage, name="usage"),
    path("usage/export.csv", billing_views.usage_export, name="usage_export"),
    path("billing/", billing_views.billing, name="billing"),
    path("", include("billing.urls")),
    path("account/data/", views.account_data, name="account_data"),
    path("account/audit/", account_views.audit_log, name="audit_log"),
    path("organizations/", org_views.organizations_page, name="organizations"),
    path("organizations/switch/", org_views.switch, name="switch_account"),
    path("organizations/<int:org_id>/", org_views.organization, name="organization"),
    path("invitations/<str:token>/", org_views.invitation, name="invitation"),
    path("account/audit/export.csv", account_views.audit_csv, name="audit_csv"),
    path("account/time-zone/", views.account_time_zone, name="account_time_zone"),
    path("account/export/", views.account_export, name="account_export"),
    path("account/delete/", views.account_delete, name="account_delete"),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("portal.api_urls")),
    path("api/v1/", include("billing.api_urls")),
    path("api/v1/", include("keys.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api_schema"),
        name="api_docs",
    ),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("favicon.ico", views.favicon),
]
