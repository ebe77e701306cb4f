"""The audit log's API, under /api/v1/ (included before the keys API, whose last pattern answers
every other path with a JSON 404). Here rather than in accounts: it authenticates management
keys, which keys (a layer above accounts) owns."""

from django.urls import path

from . import api_audit

urlpatterns = [
    path("audit/", api_audit.audit_list, name="api_audit"),
]
