"""The JSON API for keys: session auth for the browser, management keys for scripts.

Thin views: an input serializer, a service call from keys.services, an output serializer.
Every object is looked up within the caller's account, so another account's key is a 404.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Account
from billing.selectors import account_of

from . import validation
from .authentication import ManagementKeyAuthentication
from .models import LIMIT_FIELDS, ApiKey, ManagementKey
from .services import issue_key, revoke_key, rotate_key, update_limits

AUTHENTICATION = [ManagementKeyAuthentication, authentication.SessionAuthentication]


def _account(request: Request) -> Account:
    if isinstance(request.auth, ManagementKey):
        return request.auth.account
    return account_of(request.user)


class LimitsSerializer(serializers.Serializer):
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=500
    )
    allowed_ips = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=100
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    rpm_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000
    )
    tpm_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000_000
    )
    spend_cap = serializers.DecimalField(
        required=False,
        allow_null=True,
        max_digits=15,
        decimal_places=6,
        min_value=Decimal("0.01"),
    )
    spend_cap_period = serializers.ChoiceField(choices=ApiKey.Period.choices, required=False)

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


class CreateKeySerializer(LimitsSerializer):
    name = serializers.CharField(max_length=100)


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
    grace_seconds = serializers.IntegerField(min_value=0, max_value=30 * 86400, default=0)


def _with_secret(key: ApiKey, secret: str) -> dict[str, Any]:
    data = dict(KeySerializer(key).data)
    data["secret"] = secret  # in this one response only
    return data


@extend_schema(methods=["GET"], operation_id="keys_list", responses={200: KeySerializer(many=True)})
@extend_schema(
    methods=["POST"],
    operation_id="keys_create",
    request=CreateKeySerializer,
    responses={201: KeyWithSecretSerializer},
)
@api_view(["GET", "POST"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def keys(request: Request) -> Response:
    account = _account(request)
    if request.method == "GET":
        return Response(KeySerializer(account.api_keys.all(), many=True).data)
    serializer = CreateKeySerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    name = data.pop("name")
    key, secret = issue_key(account=account, name=name, limits=data)
    return Response(_with_secret(key, secret), status=status.HTTP_201_CREATED)


@extend_schema(methods=["GET"], operation_id="keys_retrieve", responses={200: KeySerializer})
@extend_schema(
    methods=["PATCH"],
    operation_id="keys_update_limits",
    request=LimitsSerializer,
    responses={200: KeySerializer},
)
@api_view(["GET", "PATCH"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def key(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(ApiKey, pk=key_id, account=_account(request))
    if request.method == "PATCH":
        if not obj.is_active:
            raise exceptions.ValidationError({"detail": "A revoked key cannot be changed."})
        serializer = LimitsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        obj = update_limits(key=obj, limits=dict(serializer.validated_data))
    return Response(KeySerializer(obj).data)


@extend_schema(operation_id="keys_revoke", request=None, responses={200: KeySerializer})
@api_view(["POST"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def revoke(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(ApiKey, pk=key_id, account=_account(request))
    return Response(KeySerializer(revoke_key(key=obj)).data)


@extend_schema(
    operation_id="keys_rotate", request=RotateSerializer, responses={201: KeyWithSecretSerializer}
)
@api_view(["POST"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def rotate(request: Request, key_id: int) -> Response:
    obj = get_object_or_404(ApiKey, pk=key_id, account=_account(request))
    if not obj.is_active:
        raise exceptions.ValidationError({"detail": "A revoked key cannot be rotated."})
    serializer = RotateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    new, secret = rotate_key(key=obj, grace_seconds=serializer.validated_data["grace_seconds"])
    return Response(_with_secret(new, secret), status=status.HTTP_201_CREATED)
