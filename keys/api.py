"""The JSON API for keys: session auth for the browser, management keys for scripts.

Thin views: an input serializer, a service call from keys.services, an output serializer.
Every object is looked up within the caller's account, so another account's key is a 404.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import authentication, exceptions, serializers, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    parser_classes,
    permission_classes,
)
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit, roles
from accounts.acting import Acting, for_api
from accounts.models import Account
from catalog.models import Provider
from core import routing as core_routing

from . import byok, validation
from .authentication import ManagementKeyAuthentication
from .models import LIMIT_FIELDS, ApiKey, ProviderCredential
from .selectors import visible_keys
from .services import issue_key, revoke_key, rotate_key, update_limits

AUTHENTICATION = [ManagementKeyAuthentication, authentication.SessionAuthentication]
# JSON in, JSON out. DRF would also read forms, where an empty field means null: one encoding
# keeps what the schema promises and what the API does the same.
PARSERS = [JSONParser]


def acting_for(request: Request, *capabilities: str) -> Acting:
    """The account an API call acts for (a management key's, or the session's choice), if the
    caller's role there allows one of ``capabilities``; a 403 otherwise."""
    current = for_api(request)
    if not any(current.can(c) for c in capabilities):
        raise exceptions.PermissionDenied("Your role in this account does not allow this.")
    return current


def _keys(request: Request) -> Any:
    return visible_keys(acting_for(request, roles.KEYS_OWN), request.user)


# The schema says as much of each rule as OpenAPI can, so that a request it calls valid is
# accepted: a name needs a visible character and no NUL; a spend cap is a positive figure of
# at most 6 decimals. What it cannot say (a model the catalog has, an IP network, an expiry in
# the future) is in a custom ``format`` and the description. DRF reads an empty spend cap as
# null, so the schema says so.
NAME = r"^[^\u0000]*[^\s\u0000\u001c-\u001f\u0085][^\u0000]*$"
POSITIVE_CAP = r"^([1-9][0-9]{0,8}(\.[0-9]{1,6})?|0\.(0[1-9][0-9]{0,4}|[1-9][0-9]{0,5})|)$"


class TextField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 0 or false into "0"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)  # type: ignore[no-any-return]


class WholeNumberField(serializers.IntegerField):
    """A JSON integer, and only that: DRF's IntegerField would also take "5", 5.0 and true."""

    def to_internal_value(self, data: Any) -> int:
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)  # type: ignore[no-any-return]


@extend_schema_field(
    {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NAME, "example": "my script"}
)
class NameField(TextField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "format": "model-id",
        "maxLength": 100,
        "description": "A model id of the catalog (see the Models page).",
    }
)
class ModelIdField(TextField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "format": "ip-network",
        "maxLength": 64,
        "description": "An IPv4 or IPv6 address or CIDR range.",
    }
)
class NetworkField(TextField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": POSITIVE_CAP,
        "description": "USD, at least 0.01, at most 6 decimals; null or empty: no cap.",
    }
)
class SpendCapField(serializers.DecimalField):
    """A decimal string: money never passes through a JSON (binary floating point) number."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


_SLUGS = {
    "type": "array",
    "maxItems": 50,
    "items": {
        "type": "string",
        "format": "provider-slug",
        "maxLength": 100,
        "description": "A provider's slug (the tag of an endpoint in /v1/models/{id}/endpoints).",
    },
}
_PRICE = {
    "oneOf": [
        {"type": "string", "format": "decimal", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,9})?$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "USD: per 1M tokens for prompt and completion, per request, per image.",
}


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "additionalProperties": False,
        "description": (
            "Provider routing defaults: the fields of a request's provider object; a "
            "request's own fields override them. Null or {}: none."
        ),
        # (Each field may be null: the same as leaving it out.)
        "properties": {
            "order": {**_SLUGS, "nullable": True},
            "only": {**_SLUGS, "nullable": True},
            "ignore": {**_SLUGS, "nullable": True},
            "allow_fallbacks": {"type": "boolean", "nullable": True},
            "require_parameters": {"type": "boolean", "nullable": True},
            "sort": {"type": "string", "enum": [*core_routing.SORTS, None], "nullable": True},
            "max_price": {
                "type": "object",
                "nullable": True,
                "additionalProperties": False,
                "properties": {
                    name: {**_PRICE, "nullable": True} for name in core_routing.MAX_PRICES
                },
            },
            "data_collection": {
                "type": "string",
                "enum": ["allow", "deny", None],
                "nullable": True,
            },
            "zdr": {"type": "boolean", "nullable": True},
        },
    }
)
class RoutingField(serializers.JSONField):
    pass


class LimitsSerializer(serializers.Serializer):
    allowed_models = serializers.ListField(
        child=ModelIdField(max_length=100), required=False, max_length=500
    )
    allowed_ips = serializers.ListField(
        child=NetworkField(max_length=64), required=False, max_length=100
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="In the future."
    )
    rpm_limit = WholeNumberField(required=False, allow_null=True, min_value=1, max_value=1_000_000)
    tpm_limit = WholeNumberField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000_000
    )
    spend_cap = SpendCapField(
        required=False,
        allow_null=True,
        max_digits=15,
        decimal_places=6,
        min_value=Decimal("0.01"),
    )
    spend_cap_period = serializers.ChoiceField(choices=ApiKey.Period.choices, required=False)
    routing = RoutingField(required=False, allow_null=True)

    def _django(self, rule: Any, value: Any) -> Any:
        try:
            return rule(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        return self._django(validation.models, value)  # type: ignore[no-any-return]

    def validate_allowed_ips(self, value: list[str]) -> list[str]:
        return self._django(validation.networks, value)  # type: ignore[no-any-return]

    def validate_expires_at(self, value: Any) -> Any:
        return self._django(validation.expiry, value)

    def validate_routing(self, value: Any) -> Any:
        return self._django(validation.routing, value)


class CreateKeySerializer(LimitsSerializer):
    name = NameField(max_length=100)


class KeySerializer(serializers.ModelSerializer):
    key = serializers.CharField(source="masked", read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "key",
            "status",
            "created_at",
            "last_used_at",
            "revoked_at",
            *LIMIT_FIELDS,
        ]
        read_only_fields = fields


class KeyWithSecretSerializer(KeySerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown in this response only.")

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ManagementKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "keys.authentication.ManagementKeyAuthentication"
    name = "managementKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A management key, tp-mk-… (API keys, tp-sk-…, are refused).",
        }


class RotateSerializer(serializers.Serializer):
    grace_seconds = WholeNumberField(min_value=0, max_value=30 * 86400, default=0)


# What every operation may answer besides its success, so that a client (and schemathesis)
# knows each status and its body: DRF's own error shapes.
_DETAIL = inline_serializer("Error", fields={"detail": serializers.CharField()})
ERRORS = {
    401: OpenApiResponse(_DETAIL, description="No credentials, or a wrong or revoked key."),
    403: OpenApiResponse(_DETAIL, description="A browser session without its CSRF token."),
    429: OpenApiResponse(_DETAIL, description="Too many requests; retry after a while."),
}
INVALID = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="The input was refused: each field with its messages, or `detail`.",
    )
}
NOT_FOUND = {404: OpenApiResponse(_DETAIL, description="No such key in this account.")}


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under the API (``/keys/abc/``): a JSON 404 like the API's own, rather
    than the site's HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


def _with_secret(key: ApiKey, secret: str) -> dict[str, Any]:
    data = dict(KeySerializer(key).data)
    data["secret"] = secret  # in this one response only
    return data


@extend_schema(
    methods=["GET"],
    operation_id="keys_list",
    responses={200: KeySerializer(many=True), **ERRORS},
)
@extend_schema(
    methods=["POST"],
    operation_id="keys_create",
    request=CreateKeySerializer,
    responses={201: KeyWithSecretSerializer, **INVALID, **ERRORS},
)
@api_view(["GET", "POST"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
def keys(request: Request) -> Response:
    account = acting_for(request, roles.KEYS_OWN).account
    if request.method == "GET":
        return Response(KeySerializer(_keys(request), many=True).data)
    serializer = CreateKeySerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    name = data.pop("name")
    key, secret = issue_key(account=account, name=name, limits=data, **audit.origin(request))
    return Response(_with_secret(key, secret), status=status.HTTP_201_CREATED)


@extend_schema(
    methods=["GET"],
    operation_id="keys_retrieve",
    responses={200: KeySerializer, **NOT_FOUND, **ERRORS},
)
@extend_schema(
    methods=["PATCH"],
    operation_id="keys_update_limits",
    request=LimitsSerializer,
    responses={200: KeySerializer, **INVALID, **NOT_FOUND, **ERRORS},
)
@api_view(["GET", "PATCH"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
def key(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(_keys(request), pk=key_id)
    if request.method == "PATCH":
        if not obj.is_active:
            raise exceptions.ValidationError({"detail": "A revoked key cannot be changed."})
        serializer = LimitsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        obj = update_limits(
            key=obj, limits=dict(serializer.validated_data), **audit.origin(request)
        )
    return Response(KeySerializer(obj).data)


@extend_schema(
    operation_id="keys_revoke",
    request=None,
    responses={200: KeySerializer, **NOT_FOUND, **ERRORS},
)
@api_view(["POST"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
def revoke(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(_keys(request), pk=key_id)
    return Response(KeySerializer(revoke_key(key=obj, **audit.origin(request))).data)


@extend_schema(
    operation_id="keys_rotate",
    request=RotateSerializer,
    responses={201: KeyWithSecretSerializer, **INVALID, **NOT_FOUND, **ERRORS},
)
@api_view(["POST"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
def rotate(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(_keys(request), pk=key_id)
    if not obj.is_active:
        raise exceptions.ValidationError({"detail": "A revoked key cannot be rotated."})
    serializer = RotateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    new, secret = rotate_key(
        key=obj, grace_seconds=serializer.validated_data["grace_seconds"], **audit.origin(request)
    )
    return Response(_with_secret(new, secret), status=status.HTTP_201_CREATED)


# ---- the account's own provider keys (BYOK) -------------------------------------------------

PROVIDER_KEY = r"^[!-~]{1,500}$"


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 500,
        "pattern": PROVIDER_KEY,
        "writeOnly": True,
        "description": "The provider's API key: checked with the provider, stored encrypted, "
        "never returned.",
    }
)
class ProviderKeyField(TextField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "format": "provider-slug",
        "maxLength": 50,
        "description": "A provider's slug (the tag of an endpoint in /v1/models/{id}/endpoints).",
    }
)
class ProviderSlugField(TextField):
    pass


class ProviderKeySerializer(serializers.ModelSerializer):
    provider = serializers.CharField(source="provider.slug", read_only=True)
    provider_name = serializers.CharField(source="provider.name", read_only=True)
    added_by = serializers.EmailField(
        source="added_by.email", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ProviderCredential
        fields = [
            "provider",
            "provider_name",
            "mode",
            "last4",
            "checked_at",
            "added_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SaveProviderKeySerializer(serializers.Serializer):
    provider = ProviderSlugField(max_length=50)
    api_key = ProviderKeyField(max_length=500, trim_whitespace=False)
    mode = serializers.ChoiceField(
        choices=ProviderCredential.Mode.choices, default=ProviderCredential.Mode.PRIORITISED
    )

    def validate_api_key(self, value: str) -> str:
        if not re.fullmatch(PROVIDER_KEY, value):
            raise serializers.ValidationError(
                "An API key is one line of printable characters, without spaces."
            )
        return value

    def validate_provider(self, value: str) -> Provider:
        provider = byok.selectable_providers().filter(slug=value).first()
        if provider is None:
            raise serializers.ValidationError("No such provider in the catalog.")
        return provider


PROVIDER_NOT_FOUND = {
    404: OpenApiResponse(_DETAIL, description="This account has no key for that provider.")
}
PROVIDER_PARAMETER = OpenApiParameter(
    "provider",
    {"type": "string", "format": "provider-slug", "maxLength": 50, "pattern": "^[-a-zA-Z0-9_]+$"},
    OpenApiParameter.PATH,
    description="The provider's slug.",
)


def _manageable(request: Request) -> Account:
    account = for_api(request).account
    if not byok.can_manage(request.user, account):
        raise exceptions.PermissionDenied("You may not manage this account's provider keys.")
    return account


@extend_schema(
    methods=["GET"],
    operation_id="provider_keys_list",
    responses={200: ProviderKeySerializer(many=True), **ERRORS},
)
@extend_schema(
    methods=["POST"],
    operation_id="provider_keys_save",
    description="Adds the account's key for a provider, or replaces the one it has, once the "
    "provider accepted it (GET <the provider's base URL>/models with that key).",
    request=SaveProviderKeySerializer,
    responses={
        200: OpenApiResponse(ProviderKeySerializer, description="Replaced."),
        201: OpenApiResponse(ProviderKeySerializer, description="Added."),
        **INVALID,
        **ERRORS,
    },
)
@api_view(["GET", "POST"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
@sensitive_variables("data", "serializer")
def provider_keys(request: Request) -> Response:
    account = _manageable(request)
    if request.method == "GET":
        rows = account.provider_credentials.select_related("provider", "added_by")
        return Response(ProviderKeySerializer(rows, many=True).data)
    serializer = SaveProviderKeySerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    try:
        credential, replaced = byok.save_credential(
            account=account,
            provider=data["provider"],
            api_key=data["api_key"],
            mode=data["mode"],
            **audit.origin(request),
        )
    except byok.KeyRefused as exc:
        raise exceptions.ValidationError({"api_key": [exc.message]}) from None
    return Response(
        ProviderKeySerializer(credential).data,
        status=status.HTTP_200_OK if replaced else status.HTTP_201_CREATED,
    )


@extend_schema(
    methods=["GET"],
    operation_id="provider_keys_retrieve",
    parameters=[PROVIDER_PARAMETER],
    responses={200: ProviderKeySerializer, **PROVIDER_NOT_FOUND, **ERRORS},
)
@extend_schema(
    methods=["DELETE"],
    operation_id="provider_keys_delete",
    parameters=[PROVIDER_PARAMETER],
    request=None,
    responses={204: None, **PROVIDER_NOT_FOUND, **ERRORS},
)
@api_view(["GET", "DELETE"])
@authentication_classes(AUTHENTICATION)
@parser_classes(PARSERS)
@permission_classes([IsAuthenticated])
def provider_key(request: Request, provider: str) -> Response:
    account = _manageable(request)
    credential = get_object_or_404(
        ProviderCredential.objects.select_related("provider", "added_by"),
        account=account,
        provider__slug=provider,
    )
    if request.method == "DELETE":
        byok.remove_credential(credential=credential, **audit.origin(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(ProviderKeySerializer(credential).data)
