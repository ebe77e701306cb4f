"""The JSON API against its own OpenAPI schema (served at /api/schema/), with schemathesis:
every operation, with valid and invalid input, signed in with a management key, then with no
credentials and with an API key (which may not manage keys). No answer is a 5xx, every answer
matches the schema (status code, content type, body, headers); signed in, invalid input is
refused and valid input accepted; otherwise everything is refused. Under the "ci" Hypothesis
profile (tests/conftest.py) every run draws the same examples; `make fuzz` draws new ones."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks

from accounts import audit
from billing import api_urls as billing_api_urls
from billing import requestlog
from catalog.models import Model, Provider
from keys import api_urls
from keys.services import issue_key, issue_management_key
from portal import api_urls as portal_api_urls
from portal.wsgi import application
from simulators.llm import start_in_thread

ALL_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.use_after_free,
    checks.ensure_resource_availability,
    checks.ignored_auth,
]
# Without the right credentials: still no 5xx, and every refusal as the schema documents it.
REFUSED_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
MODEL_IDS = ["schema-model-a", "schema-model-b"]

# What OpenAPI cannot say, the schema names as a format and a description; these strategies
# generate the values those formats mean, so that "valid" here is valid to the API too.
schemathesis.openapi.format("model-id", st.sampled_from(MODEL_IDS))
schemathesis.openapi.format("provider-slug", st.sampled_from(["schema-provider"]))
schemathesis.openapi.format(
    "ip-network",
    st.one_of(
        st.ip_addresses().map(str),
        st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
    ),
)
# The usage API's range: a first day at most 180 days back and a last day after it, so that a
# "valid" range is one the API takes (from <= to, at most 366 days, from 2000 on); and zones.
schemathesis.openapi.format(
    "range-start",
    st.integers(91, 180).map(lambda n: (datetime.now(UTC) - timedelta(days=n)).date().isoformat()),
)
schemathesis.openapi.format(
    "range-end",
    st.integers(0, 90).map(lambda n: (datetime.now(UTC) - timedelta(days=n)).date().isoformat()),
)
schemathesis.openapi.format(
    "time-zone", st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"])
)
# The API's only date-time input is an expiry, which must lie in the future.
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime.now() + timedelta(days=1),
        max_value=datetime(9000, 1, 1),
        timezones=st.just(UTC),
    ).map(lambda d: d.isoformat()),
)
# A cursor is signed for one account. Cases are drawn before the fixtures run (schemathesis's
# coverage phase), so they are signed for account 0 here and for the signed-in account just
# before each call (``before_call``).
schemathesis.openapi.format(
    "cursor",
    st.builds(
        lambda when, event_id, direction: requestlog.sign_cursor(0, when, event_id, direction),
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        st.integers(1, 2**62),
        st.sampled_from([requestlog.OLDER, requestlog.NEWER]),
    ),
)

# The audit log's cursor: signed apart from the request log's, the same way.
schemathesis.openapi.format(
    "audit-cursor",
    st.builds(
        lambda when, event_id: audit.sign_cursor(0, when, event_id),
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        st.integers(1, 2**62),
    ),
)


def _load_schema() -> Any:
    """The schema as the portal serves it, read through the WSGI app at collection time (no
    database is needed to serve it); each case is then sent to the same app."""
    return schemathesis.openapi.from_wsgi("/api/schema/", application)


# schemathesis.pytest.from_fixture would load it per test, but relies on a pytest internal
# (Node._nodeid) that pytest 9 no longer has.
schema = _load_schema()


# The account the management key below belongs to: drawn cursors are re-signed for it.
SIGNED_IN = {"account": 0}


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """A drawn cursor (signed for account 0) re-signed for the signed-in account, just before
    the call (a hook, so that the test function, whose source seeds Hypothesis under the "ci"
    profile, stays as it was); anything else as drawn."""
    cursor = (case.query or {}).get("cursor")
    if not isinstance(cursor, str):
        return
    try:
        when, event_id = audit.read_cursor(0, cursor)
    except audit.BadCursor:
        pass
    else:
        case.query["cursor"] = audit.sign_cursor(SIGNED_IN["account"], when, event_id)
        return
    try:
        position = requestlog.read_cursor(SimpleNamespace(pk=0), cursor)  # type: ignore[arg-type]
    except requestlog.BadCursor:
        return
    case.query["cursor"] = requestlog.sign_cursor(
        SIGNED_IN["account"], position.started_at, position.id, position.direction
    )


@pytest.fixture(scope="session")
def schema_upstream() -> Iterator[str]:
    """The schema provider's upstream: it takes any key, so that a provider key the schema
    calls valid is one the API saves (it checks each with the provider)."""
    server = start_in_thread()
    yield server.base_url
    server.stop()


@pytest.fixture
def management_key(alice: Any, schema_upstream: str) -> str:
    """A management key of alice's, whose account has two API keys to look at, in a catalog
    with two models a key may be limited to."""
    provider = Provider.objects.create(
        slug="schema-provider", name="Schema", base_url=schema_upstream
    )
    for model_id in MODEL_IDS:
        Model.objects.create(id=model_id, name=model_id, provider=provider, upstream_model="m")
    for name in ("first", "second"):
        issue_key(account=alice.account, name=name)
    SIGNED_IN["account"] = alice.account.pk
    return issue_management_key(account=alice.account, name="schemathesis")[1]


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_answers_as_its_schema_says(case: Any, management_key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {management_key}"}, checks=ALL_CHECKS)


@pytest.fixture(params=["anonymous", "api key"])
def refused_headers(request: pytest.FixtureRequest, alice: Any) -> dict[str, str]:
    """No credentials at all, or one of alice's API keys (tp-sk-…), which calls models but may
    not manage keys; alice also holds a management key, so there is something to refuse."""
    issue_management_key(account=alice.account, name="not sent")
    if request.param == "anonymous":
        return {}
    return {"Authorization": f"Bearer {issue_key(account=alice.account, name='sent')[1]}"}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_refuses_without_a_management_key(
    case: Any, refused_headers: dict[str, str]
) -> None:
    response = case.call_and_validate(headers=refused_headers, checks=REFUSED_CHECKS)
    # A key id that is no number, or a provider that is no slug, names no API path at all:
    # that is a 404 before any sign-in.
    parameters = case.path_parameters or {}
    key_id = str(parameters.get("key_id", 0))
    provider = str(parameters.get("provider", "slug"))
    names_a_path = key_id.isdigit() and re.fullmatch(r"[-a-zA-Z0-9_]+", provider) is not None
    assert response.status_code in (401, 403) or not names_a_path


def test_the_schema_holds_every_api_operation() -> None:
    """So that the runs above reach every path under /api/v1/. Not the secret-scanning
    endpoint: a partner programme's signed webhook rather than part of the API, fuzzed with
    and without valid signatures in tests/test_webhook_fuzz.py; nor the JSON 404 for the rest."""
    routes = {
        "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        for pattern in [
            *portal_api_urls.urlpatterns,
            *billing_api_urls.urlpatterns,
            *api_urls.urlpatterns,
        ]
        if pattern.name not in ("secret_scanning", None)
    }
    assert routes == set(schema.raw_schema["paths"])


def test_an_unknown_path_under_the_api_is_a_json_404(management_key: str) -> None:
    client = Client(headers={"Authorization": f"Bearer {management_key}"})
    paths = ("/api/v1/keys/null,null/", "/api/v1/keys/-1/revoke/", "/api/v1/", "/api/v1/k/\n«/")
    for path in paths:
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    # A missing slash is still redirected, as everywhere else on the site.
    assert client.get("/api/v1/keys").status_code == 301
