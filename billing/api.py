"""The JSON API for usage and balance: the request log (a keyset-paged list, one request, the
CSV) and the balance. Session auth for the browser, management keys for scripts, as the keys
API. Thin views over ``billing.requestlog`` and ``billing.ledger``; every query is the caller's
account's, so another account's request is a 404 and its key id filters to nothing.
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import roles
from accounts.models import Account
from keys.api import AUTHENTICATION, ERRORS, acting_for
from keys.selectors import usage_keys

from . import ledger, log_views, requestlog
from .models import LedgerEntry, UsageEvent

INTEGER = re.compile(r"[0-9]{1,18}")
AMOUNT = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"


def _usage(request: Request) -> tuple[Account, tuple[int, ...] | None]:
    """The acting account and the keys whose usage the caller's role shows (None: all)."""
    current = acting_for(request, roles.USAGE_OWN)
    return current.account, usage_keys(current, request.user)


# Query parameters are strings; these read them strictly, so that what the schema calls
# invalid is refused (DRF's own fields would take "5.0" for 5 or "1" for true).
@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 10**18 - 1})
class KeyIdField(serializers.Field):
    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not INTEGER.fullmatch(data) or int(data) < 1:
            raise serializers.ValidationError("A key id: a positive whole number.")
        return int(data)


@extend_schema_field({"type": "boolean"})
class StrictBooleanField(serializers.Field):
    def to_internal_value(self, data: Any) -> bool:
        if data == "true":
            return True
        if data == "false":
            return False
        raise serializers.ValidationError("true or false.")


@extend_schema_field(
    {
        "type": "string",
        "pattern": AMOUNT,
        "format": "decimal",
        "description": "USD as a decimal string, at most 9 decimals.",
    }
)
class AmountField(serializers.Field):
    def to_internal_value(self, data: Any) -> Decimal:
        if not isinstance(data, str) or not re.fullmatch(AMOUNT, data):
            raise serializers.ValidationError("USD as a decimal string, at most 9 decimals.")
        return Decimal(data)


RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class InstantField(serializers.DateTimeField):
    """An RFC 3339 date-time with its offset, and only that: DRF's field would also take a
    date alone, or a time without an offset (in whose zone?)."""

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not RFC3339.fullmatch(value):
            raise serializers.ValidationError(
                "An RFC 3339 date and time with its offset, e.g. 2026-05-01T00:00:00Z."
            )
        return super().to_internal_value(value)


@extend_schema_field(
    {
        "type": "string",
        "format": "cursor",
        "maxLength": 500,
        "description": "The `next` of a previous answer, with the same filters.",
    }
)
class CursorField(serializers.CharField):
    pass


class RequestFiltersSerializer(serializers.Serializer):
    key = KeyIdField(required=False, help_text="Only this key's requests (its id).")
    model = serializers.CharField(
        required=False,
        max_length=150,
        trim_whitespace=False,
        help_text="Only this model's requests (its id).",
    )
    status = serializers.ChoiceField(choices=UsageEvent.Status.values, required=False)
    streamed = StrictBooleanField(required=False)
    since = InstantField(
        required=False, help_text="Requests started at or after this time (RFC 3339)."
    )
    until = InstantField(required=False, help_text="Requests started before this time (RFC 3339).")
    min_cost = AmountField(required=False, help_text="Requests that cost at least this.")

    def filters(self) -> requestlog.Filters:
        data = self.validated_data
        return requestlog.Filters(
            key=data.get("key"),
            model=data.get("model", ""),
            status=data.get("status", ""),
            streamed=data.get("streamed"),
            since=data.get("since"),
            until=data.get("until"),
            min_cost=data.get("min_cost"),
        )


class RequestListQuerySerializer(RequestFiltersSerializer):
    cursor = CursorField(required=False, max_length=500)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=requestlog.MAX_PER_PAGE, default=50
    )

    def validate_limit(self, value: int) -> int:
        raw = self.initial_data.get("limit")
        if raw is not None and not INTEGER.fullmatch(str(raw)):
            raise serializers.ValidationError("A whole number.")
        return value


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.000123000"})
class MoneyField(serializers.Field):
    """An exact decimal string: money never passes through a JSON (binary floating point)
    number."""

    def to_representation(self, value: Decimal) -> str:
        return requestlog.decimal_text(value)


class RequestSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_id")
    key = serializers.IntegerField(source="key_id", allow_null=True)
    key_name = serializers.SerializerMethodField()
    cost = MoneyField()
    unbilled = MoneyField()

    class Meta:
        model = UsageEvent
        fields = [
            "request_id",
            "started_at",
            "key",
            "key_name",
            "model",
            "provider",
            "upstream_model",
            *UsageEvent.RESULT,
        ]
        read_only_fields = fields

    def get_key_name(self, event: UsageEvent) -> str | None:
        return event.key.name if event.key is not None else None


class RequestPageSerializer(serializers.Serializer):
    data = RequestSerializer(many=True)  # type: ignore[assignment]  # the field named "data"
    next = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next (older) page; null at the end."
    )


class CostLineSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[
            "input",
            "cached_input",
            "cache_write",
            "cache_write_1h",
            "input_audio",
            "output",
            "reasoning",
            "output_audio",
            "request",
            "image",
            "audio_second",
        ]
    )
    quantity = serializers.IntegerField(
        help_text="Tokens; requests; images; or milliseconds of audio (audio_second)."
    )
    rate = MoneyField(help_text="USD per 1M tokens; per request; per image; per second of audio.")
    amount = MoneyField(help_text="Exact, unrounded.")


class LedgerEntryRefSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    kind = serializers.CharField()
    amount = MoneyField()
    created_at = serializers.DateTimeField()


class RequestDetailSerializer(RequestSerializer):
    cost_lines = serializers.SerializerMethodField(
        help_text="By price type at the request's price version; their sum rounded up to the "
        "nano-dollar is what the usage came to (null where the version is unknown)."
    )
    ledger_entry = serializers.SerializerMethodField()

    class Meta(RequestSerializer.Meta):
        fields = [*RequestSerializer.Meta.fields, "cost_lines", "ledger_entry"]
        read_only_fields = fields

    @extend_schema_field(CostLineSerializer(many=True, allow_null=True))
    def get_cost_lines(self, event: UsageEvent) -> list[dict[str, Any]] | None:
        found = requestlog.cost_lines(event)
        if found is None:
            return None
        return [
            dict(CostLineSerializer(line).data)
            for line in found  # (dataclasses: DRF reads their attributes)
        ]

    @extend_schema_field(LedgerEntryRefSerializer(allow_null=True))
    def get_ledger_entry(self, event: UsageEvent) -> dict[str, Any] | None:
        entry = event.ledger_entry
        return dict(LedgerEntryRefSerializer(entry).data) if entry is not None else None


class BalanceSerializer(serializers.Serializer):
    currency = serializers.CharField(default="USD")
    balance = MoneyField(help_text="The ledger balance.")
    on_hold = MoneyField(help_text="Held for requests in flight, or used and not yet posted.")
    available = MoneyField(help_text="What new requests may spend: balance − on hold.")
    credits_total = MoneyField(
        help_text="Everything ever credited: top-ups, vouchers, adjustments, refunds of usage."
    )
    topups_total = MoneyField(help_text="Top-ups alone.")
    usage_total = MoneyField(help_text="Usage debited, as a positive amount.")
    as_of = serializers.DateTimeField(allow_null=True, help_text="The newest ledger entry's time.")


_BAD_QUERY = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="A filter was refused (each with its messages), or the cursor is not one "
        "of this account's.",
    )
}
_NOT_FOUND = {
    404: OpenApiResponse(
        OpenApiTypes.OBJECT, description="No request of this id in the caller's account."
    )
}
_CSV = OpenApiResponse(
    OpenApiTypes.STR,
    description="CSV, newest first, streamed: one header line, then one line per request. "
    "Money is in exact decimal strings.",
)


def _query(serializer_class: type[RequestFiltersSerializer], request: Request) -> Any:
    # DRF reads an empty query value as absent (a form's habit); here it is refused, as the
    # schema says: no parameter may be empty.
    empty = {
        name: ["May not be empty."] for name, value in request.query_params.items() if not value
    }
    if empty:
        raise exceptions.ValidationError(empty)
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer


@extend_schema(
    operation_id="usage_requests_list",
    parameters=[RequestListQuerySerializer],
    responses={200: RequestPageSerializer, **_BAD_QUERY, **ERRORS},
)
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def requests_list(request: Request) -> Response:
    account, keys = _usage(request)
    query = _query(RequestListQuerySerializer, request)
    limit = query.validated_data["limit"]
    try:
        found = requestlog.page(
            account,
            replace(query.filters(), keys=keys),
            query.validated_data.get("cursor") or None,
            limit,
        )
    except requestlog.BadCursor:
        raise exceptions.ValidationError(
            {"cursor": ["Not a cursor of this account's request log."]}
        ) from None
    return Response({"data": RequestSerializer(found.rows, many=True).data, "next": found.older})


@extend_schema(
    operation_id="usage_requests_retrieve",
    responses={200: RequestDetailSerializer, **_NOT_FOUND, **ERRORS},
)
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def request_detail(request: Request, request_id: str) -> Response:
    account, keys = _usage(request)
    event = requestlog.find(account, request_id, keys)
    if event is None:
        raise exceptions.NotFound("No request of this id in your account.")
    return Response(RequestDetailSerializer(event).data)


@extend_schema(
    operation_id="usage_requests_export_csv",
    parameters=[RequestFiltersSerializer],
    responses={(200, "text/csv"): _CSV, **_BAD_QUERY, **ERRORS},
)
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def requests_csv(request: Request) -> Any:
    account, keys = _usage(request)
    query = _query(RequestFiltersSerializer, request)
    return log_views.csv_response(account, replace(query.filters(), keys=keys))


@extend_schema(operation_id="balance_retrieve", responses={200: BalanceSerializer, **ERRORS})
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def balance(request: Request) -> Response:
    account = acting_for(request, roles.BILLING).account
    figures = ledger.summary(account)
    totals = LedgerEntry.objects.filter(account=account).aggregate(
        credits=Sum("amount", filter=Q(amount__gt=0)),
        topups=Sum("amount", filter=Q(kind=LedgerEntry.Kind.TOPUP, amount__gt=0)),
        usage=Sum("amount", filter=Q(kind=LedgerEntry.Kind.USAGE)),
    )
    newest = LedgerEntry.objects.filter(account=account).order_by("-seq").first()
    zero = Decimal(0)
    data = {
        "currency": "USD",
        "balance": figures["balance"],
        "on_hold": figures["on_hold"],
        "available": figures["available"],
        "credits_total": totals["credits"] or zero,
        "topups_total": totals["topups"] or zero,
        "usage_total": -(totals["usage"] or zero),
        "as_of": timezone.localtime(newest.created_at) if newest else None,
    }
    return Response(BalanceSerializer(data).data)
