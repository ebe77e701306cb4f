"""The usage and balance API, under /api/v1/ (included before the keys API, whose last
pattern answers every other path with a JSON 404)."""

from django.urls import path

from . import api, api_activity

urlpatterns = [
    path("usage/requests/", api.requests_list, name="api_usage_requests"),
    path("usage/requests/export.csv", api.requests_csv, name="api_usage_requests_csv"),
    path("usage/requests/<str:request_id>/", api.request_detail, name="api_usage_request"),
    path("balance/", api.balance, name="api_balance"),
    path("usage/", api_activity.usage, name="api_usage"),
]
