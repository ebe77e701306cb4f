from django.contrib import admin
from django.urls import include, path

from billing import views as billing_views
from catalog import views as catalog_views
from keys import views as key_views

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("models/", catalog_views.model_list, name="models"),
    path("docs/", views.docs, name="docs"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("keys/", key_views.key_list, name="keys"),
    path("keys/<int:key_id>/revoke/", key_views.revoke, name="key_revoke"),
    path("usage/", billing_views.usage, name="usage"),
    path("billing/", billing_views.billing, name="billing"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon),
]
