"""DRF authentication by management key (kept apart from the API views: settings import it)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .models import ManagementKey
from .services import management_key_for


class ManagementKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer tp-mk-…``. API keys (``tp-sk-``) are not accepted here."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[Any, ManagementKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword or not token.strip():
            return None
        key = management_key_for(token.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked management key.")
        ManagementKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
        return key.created_by, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
