"""GET /api/v1/usage/ (issue 14): the activity page's figures as JSON, read from the rollups
(billing.activity). Session or management-key auth, as the keys API; within the caller's
account only, so another account's key id is a 404 like any unknown key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import roles, timezones
from keys.api import AUTHENTICATION, ERRORS, INVALID, NOT_FOUND, acting_for
from keys.selectors import usage_keys

from . import activity

DEFAULT_DAYS = 30


class UsageQuerySerializer(serializers.Serializer):
    """The query string. A range is whole days in ``tz``, both ends included, at most
    ``activity.MAX_DAYS`` long."""

    # "from" is a Python keyword: declared below under its URL name.
    to = serializers.DateField(required=False)
    tz = serializers.CharField(required=False, max_length=64)
    group_by = serializers.ChoiceField(
        choices=["model", "key", "provider", "none"], required=False, default="none"
    )
    granularity = serializers.ChoiceField(choices=["day", "hour"], required=False, default="day")
    key = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    model = serializers.CharField(
        required=False, min_length=1, max_length=150, trim_whitespace=False
    )

    def get_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = super().get_fields()
        fields["from"] = serializers.DateField(required=False)
        return fields

    def validate_tz(self, value: str) -> str:
        if timezones.zone(value) is None:
            raise serializers.ValidationError("An IANA time zone name, e.g. Europe/Paris.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        first, last = attrs.get("from"), attrs.get("to")
        if first and last and first > last:
            raise serializers.ValidationError({"from": "After `to`."})
        if first and last and (last - first).days + 1 > activity.MAX_DAYS:
            raise serializers.ValidationError(
                {"from": f"A range is at most {activity.MAX_DAYS} days long."}
            )
        for name in ("from", "to"):
            value = attrs.get(name)
            if value is not None and value.year < 2000:
                raise serializers.ValidationError({name: "From the year 2000 on."})
        return attrs


class FiguresSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Requests whose status is not ok.")  # type: ignore[assignment]
    prompt_tokens = serializers.IntegerField(help_text="Input tokens, cached ones included.")
    completion_tokens = serializers.IntegerField(help_text="Output tokens, reasoning included.")
    cached_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cache_write_1h_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    byok = serializers.IntegerField(
        help_text="Requests sent with your own provider key (billed a fee, not the price)."
    )
    cost = serializers.CharField(help_text="USD, an exact decimal string (9 decimals).")


class PeriodTotalsSerializer(FiguresSerializer):
    start = serializers.DateTimeField(help_text="Inclusive, in the time zone's offset.")
    end = serializers.DateTimeField(help_text="Exclusive.")


class PointSerializer(FiguresSerializer):
    start = serializers.DateTimeField(help_text="The bucket's start, in the zone's offset.")
    group = serializers.CharField(
        allow_null=True, help_text="Model id, provider or key id (as a string); null: no group."
    )
    group_name = serializers.CharField(
        allow_null=True, help_text="The key's name for group_by=key, else the group."
    )


class UsageSerializer(serializers.Serializer):
    time_zone = serializers.CharField()
    granularity = serializers.ChoiceField(choices=["day", "hour"])
    group_by = serializers.ChoiceField(choices=["model", "key", "provider", "none"])
    totals = PeriodTotalsSerializer()
    previous = PeriodTotalsSerializer(help_text="The period of equal length just before.")
    series = PointSerializer(many=True, help_text="One point per bucket and group with usage.")


def _figures(values: list[Any]) -> dict[str, Any]:
    out = activity.named(values)
    out["cost"] = f"{out['cost']:.9f}"
    return out


def _bounds(period: activity.Period) -> dict[str, str]:
    zone = period.zone
    return {
        "start": period.start.astimezone(zone).isoformat(),
        "end": period.end.astimezone(zone).isoformat(),
    }


PARAMETERS = [
    OpenApiParameter(
        "from",
        {"type": "string", "format": "range-start"},
        description="First day (YYYY-MM-DD, in `tz`), included; default: 29 days before `to`. "
        "Not after `to`; the range is at most 366 days; from the year 2000 on.",
    ),
    OpenApiParameter(
        "to",
        {"type": "string", "format": "range-end"},
        description="Last day (YYYY-MM-DD, in `tz`), included; default: today.",
    ),
    OpenApiParameter(
        "tz",
        {"type": "string", "format": "time-zone", "maxLength": 64},
        description="An IANA time zone (Europe/Paris); default: the account's, else UTC.",
    ),
    OpenApiParameter("group_by", {"type": "string", "enum": ["model", "key", "provider", "none"]}),
    OpenApiParameter(
        "granularity",
        {"type": "string", "enum": ["day", "hour"]},
        description="Buckets: local days, or UTC hours (labelled in `tz`).",
    ),
    OpenApiParameter(
        "key",
        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        description="Only this API key's usage (its id); 404 if the account has no such key.",
    ),
    OpenApiParameter(
        "model",
        {"type": "string", "minLength": 1, "maxLength": 150, "pattern": "^[^\\u0000]+$"},
        description="Only this model's usage (its id, as the usage rows name it).",
    ),
]


@extend_schema(
    operation_id="usage_retrieve",
    parameters=PARAMETERS,
    responses={
        200: UsageSerializer,
        **INVALID,
        **NOT_FOUND,
        **ERRORS,
    },
)
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def usage(request: Request) -> Response:
    current = acting_for(request, roles.USAGE_OWN)
    account = current.account
    keys = usage_keys(current, request.user)
    query = UsageQuerySerializer(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    data = query.validated_data
    zone = timezones.zone(data.get("tz")) or timezones.zone_of(request.user)
    key_id = data.get("key")
    if key_id is not None and (
        not account.api_keys.filter(pk=key_id).exists() or (keys is not None and key_id not in keys)
    ):
        raise NotFound("No such key in this account.")
    today = timezone.now().astimezone(zone).date()
    last = data.get("to") or (
        min(today, data["from"] + timedelta(days=DEFAULT_DAYS - 1)) if data.get("from") else today
    )
    first = data.get("from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise serializers.ValidationError({"from": "After `to`."})
    period = activity.days(first, last, zone, data["granularity"])
    scope = activity.Scope(account, key_id, data.get("model"), keys=keys)
    group_by = data["group_by"]
    dim = activity.DIMENSIONS.get(group_by)
    names = activity.key_names(account) if group_by == "key" else {}
    series = []
    found = activity.sums(scope, period, (dim,) if dim else ())
    for (index, values), figures in sorted(
        found.items(), key=lambda item: (item[0][0], str(item[0][1]))
    ):
        group = values[0] if values else None
        series.append(
            {
                "start": period.boundaries[index].astimezone(zone).isoformat(),
                "group": (None if group is None else str(group)) if dim else None,
                "group_name": names.get(int(group), "") if group_by == "key" and group else group,
                **_figures(figures),
            }
        )
    previous = period.previous()
    return Response(
        {
            "time_zone": zone.key,
            "granularity": period.granularity,
            "group_by": group_by,
            "totals": {**_bounds(period), **_figures(activity.totals(scope, period))},
            "previous": {**_bounds(previous), **_figures(activity.totals(scope, previous))},
            "series": series,
        }
    )
