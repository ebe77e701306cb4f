"""GET /api/v1/audit/ (issue 15): the account's audit log as JSON, newest first, paged by a
cursor (``next``). Session or management-key auth, as the keys API; a thin view over
``accounts.audit``, whose ``can_read`` decides who reads which account's log."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.acting import for_api
from accounts.models import Account, AuditEvent
from billing.api import INTEGER, InstantField
from keys.api import AUTHENTICATION, ERRORS


def _account(request: Request) -> Account:
    account = for_api(request).account
    if not audit.can_read(request.user, account):
        raise exceptions.PermissionDenied("You may not read this account's audit log.")
    return account


@extend_schema_field(
    {
        "type": "string",
        "format": "audit-cursor",
        "maxLength": 500,
        "description": "The `next` of a previous answer, with the same filters.",
    }
)
class AuditCursorField(serializers.CharField):
    """Not the request log's cursor: signed apart, so one is never taken for the other."""


class AuditQuerySerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=AuditEvent.Action.values, required=False, help_text="Only events of this action."
    )
    since = InstantField(required=False, help_text="Events at or after this time (RFC 3339).")
    until = InstantField(required=False, help_text="Events before this time (RFC 3339).")
    cursor = AuditCursorField(required=False, max_length=500)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=audit.MAX_PER_PAGE, default=audit.PER_PAGE
    )

    def validate_limit(self, value: int) -> int:
        raw = self.initial_data.get("limit")
        if raw is not None and not INTEGER.fullmatch(str(raw)):
            raise serializers.ValidationError("A whole number.")
        return value

    def filters(self) -> audit.Filters:
        data = self.validated_data
        return audit.Filters(
            action=data.get("action", ""), since=data.get("since"), until=data.get("until")
        )


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor_label",
        help_text='The acting user\'s email address at the time, or "operator" or "system".',
    )
    details = serializers.JSONField(
        help_text="Small JSON: a change as {field: {old, new}}; money as decimal strings."
    )

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "target", "network", "details"]
        read_only_fields = fields


class AuditPageSerializer(serializers.Serializer):
    data = AuditEventSerializer(many=True)  # type: ignore[assignment]  # the field named "data"
    next = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next (older) page; null at the end."
    )


_BAD_QUERY = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="A filter was refused (each with its messages), or the cursor is not one "
        "of this account's.",
    )
}


@extend_schema(
    operation_id="audit_list",
    parameters=[AuditQuerySerializer],
    responses={200: AuditPageSerializer, **_BAD_QUERY, **ERRORS},
)
@api_view(["GET"])
@authentication_classes(AUTHENTICATION)
@permission_classes([IsAuthenticated])
def audit_list(request: Request) -> Response:
    account = _account(request)
    # As the usage API: an empty query value is refused, not read as absent.
    empty = {
        name: ["May not be empty."] for name, value in request.query_params.items() if not value
    }
    if empty:
        raise exceptions.ValidationError(empty)
    query = AuditQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    try:
        found = audit.page(
            account,
            query.filters(),
            query.validated_data.get("cursor") or None,
            query.validated_data["limit"],
        )
    except audit.BadCursor:
        raise exceptions.ValidationError(
            {"cursor": ["Not a cursor of this account's audit log."]}
        ) from None
    body: dict[str, Any] = {
        "data": AuditEventSerializer(found.rows, many=True).data,
        "next": found.older,
    }
    return Response(body)
