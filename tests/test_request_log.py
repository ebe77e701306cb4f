"""The request log (issue 14): the log page's filters and keyset pages with signed cursors, a
request's page with its cost by price type, the CSV streamed in chunks, the usage-requests and
balance API; and bob never sees alice's requests, on any page or endpoint, whatever he sends."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from billing import requestlog, usage
from billing.forms import RequestLogForm
from billing.models import UsageEvent
from catalog.models import Model
from core.pricing import cost, lines
from keys.services import issue_key, issue_management_key

pytestmark = pytest.mark.usefixtures("catalog")

NOW = datetime.now(UTC).replace(microsecond=0)
MODEL = "mistral-large-2"
OTHER_MODEL = "codestral"


def version_of(model: str) -> int:
    price = Model.objects.get(id=model).price
    assert price is not None
    return price.version


def record(account: Any, key: Any, n: int, **fields: Any) -> str:
    """Records one event through the worker's path (ledger debit, rollups); its request id."""
    model = fields.pop("model", MODEL)
    started = fields.pop("started_at", NOW - timedelta(minutes=n))
    request_id = fields.pop("request_id", f"req_{account.pk}_{n:06d}")
    event = {
        "request_id": request_id,
        "account": account.pk,
        "key": key.pk,
        "model": model,
        "provider": "mistral",
        "upstream_model": model + "-upstream",
        "prompt_tokens": 1000 + n,
        "completion_tokens": 100 + n,
        "cached_tokens": 200,
        "cost": "0.01",
        "price_version": version_of(model),
        "status": "ok",
        "streamed": False,
        "started_at": started.timestamp(),
        "duration_ms": 1200,
        "ttfb_ms": 300,
        "finish_reason": "stop",
        **fields,
    }
    assert usage.record_batch([event]) == 1
    return request_id


@pytest.fixture
def people(alice: Any, bob: Any) -> dict[str, Any]:
    alice_keys = [issue_key(account=alice.account, name=n)[0] for n in ("laptop", "server")]
    bob_key = issue_key(account=bob.account, name="bobs")[0]
    return {"alice": alice, "bob": bob, "alice_keys": alice_keys, "bob_key": bob_key}


@pytest.fixture
def bob_client(bob: Any) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def shown(response: Any) -> list[str]:
    page = response.context["page"]
    return [e.request_id for e in page.rows] if page else []


def log(client: Client, **params: Any) -> Any:
    return client.get(reverse("usage_requests"), params)


# ---- the log page -----------------------------------------------------------------------------


def test_it_lists_the_newest_first_each_linking_to_its_page(
    alice_client: Client, people: dict[str, Any]
) -> None:
    alice, (laptop, _) = people["alice"], people["alice_keys"]
    ids = [record(alice.account, laptop, n) for n in range(3)]
    response = log(alice_client)
    assert response.status_code == 200
    assert shown(response) == ids  # n=0 is the newest
    html = response.content.decode()
    for request_id in ids:
        assert reverse("usage_request", args=[request_id]) in html
    assert "laptop" in html and MODEL in html and "mistral" in html


def test_each_filter_narrows_the_log(alice_client: Client, people: dict[str, Any]) -> None:
    alice, (laptop, server) = people["alice"], people["alice_keys"]
    a = alice.account
    plain = record(a, laptop, 1)
    other_key = record(a, server, 2)
    other_model = record(a, laptop, 3, model=OTHER_MODEL)
    failed = record(a, laptop, 4, status="error", cost="0", http_status=502)
    streamed = record(a, laptop, 5, streamed=True)
    old = record(a, laptop, 6, started_at=NOW - timedelta(days=10))
    pricey = record(a, laptop, 7, prompt_tokens=900_000)
    everything = {plain, other_key, other_model, failed, streamed, old, pricey}
    assert set(shown(log(alice_client))) == everything
    assert set(shown(log(alice_client, key=server.pk))) == {other_key}
    assert set(shown(log(alice_client, model=OTHER_MODEL))) == {other_model}
    assert set(shown(log(alice_client, status="error"))) == {failed}
    assert set(shown(log(alice_client, streamed="yes"))) == {streamed}
    assert set(shown(log(alice_client, streamed="no"))) == everything - {streamed}
    day = (NOW - timedelta(days=10)).date()
    assert set(shown(log(alice_client, since=day, until=day))) == {old}
    assert old not in shown(log(alice_client, since=NOW.date() - timedelta(days=2)))
    assert set(shown(log(alice_client, min_cost="1"))) == {pricey}
    assert shown(log(alice_client, model=OTHER_MODEL, key=server.pk)) == []


def test_a_date_range_is_whole_days_in_the_readers_time_zone() -> None:
    form = RequestLogForm({"since": "2026-03-01", "until": "2026-03-01"}, keys=[])
    assert form.is_valid(), form.errors
    tokyo = form.filters(ZoneInfo("Asia/Tokyo"))
    assert tokyo.since == datetime(2026, 2, 28, 15, tzinfo=UTC)
    assert tokyo.until == datetime(2026, 3, 1, 15, tzinfo=UTC)
    utc = form.filters(UTC)
    assert (utc.since, utc.until) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "params",
    [
        {"min_cost": "abc"},
        {"min_cost": "-1"},
        {"since": "2026-13-45"},
        {"since": "0001-01-01"},
        {"until": "9999-12-31"},
        {"since": "2026-03-02", "until": "2026-03-01"},
        {"status": "bogus"},
        {"key": "abc"},
        {"streamed": "maybe"},
        {"model": "x" * 151},
    ],
)
def test_bad_filters_are_form_errors_never_a_500(
    alice_client: Client, people: dict[str, Any], params: dict[str, str]
) -> None:
    record(people["alice"].account, people["alice_keys"][0], 1)
    response = log(alice_client, **params)
    assert response.status_code == 400
    assert response.context["form"].errors
    assert 'data-testid="filter-errors"' in response.content.decode()
    csv_response = alice_client.get(reverse("usage_requests_csv"), params)
    assert csv_response.status_code == 400


def test_htmx_gets_the_results_alone(alice_client: Client, people: dict[str, Any]) -> None:
    record(people["alice"].account, people["alice_keys"][0], 1)
    response = alice_client.get(
        reverse("usage_requests"),
        {"model": MODEL},
        headers={"HX-Request": "true", "HX-Target": "log-results"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="log-table"' in html and "<html" not in html
    assert "HX-Target" in response["Vary"]


def test_pages_follow_the_cursor_forward_and_back_through_ties(
    alice: Any, people: dict[str, Any]
) -> None:
    laptop = people["alice_keys"][0]
    same = NOW - timedelta(hours=1)
    # Seven requests at one instant among others: a page boundary falls inside the tie.
    ids = [record(alice.account, laptop, n, started_at=same) for n in range(7)]
    ids += [record(alice.account, laptop, n) for n in range(10, 15)]
    expected = [
        e.request_id
        for e in UsageEvent.objects.filter(account=alice.account).order_by("-started_at", "-id")
    ]
    filters = requestlog.Filters()
    pages, cursor = [], None
    while True:
        found = requestlog.page(alice.account, filters, cursor, per_page=3)
        pages.append(found)
        if found.older is None:
            break
        cursor = found.older
    walked = [e.request_id for p in pages for e in p.rows]
    assert walked == expected  # each exactly once, in order
    assert len(pages) == 4 and pages[0].newer is None
    # Back again, page by page, to the newest.
    for before, current in zip(reversed(pages[:-1]), reversed(pages[1:]), strict=True):
        assert current.newer is not None
        back = requestlog.page(alice.account, filters, current.newer, per_page=3)
        assert [e.request_id for e in back.rows] == [e.request_id for e in before.rows]


def test_the_page_links_to_older_and_newer_pages(
    alice_client: Client, people: dict[str, Any]
) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    for n in range(requestlog.PER_PAGE + 5):
        record(alice.account, laptop, n)
    first = log(alice_client, model=MODEL)
    page = first.context["page"]
    assert page.newer is None and page.older is not None
    older_link = first.content.decode().split('data-testid="older"')[0].rsplit('href="', 1)[1]
    query = parse_qs(urlsplit(older_link.split('"')[0].replace("&amp;", "&")).query)
    assert query["model"] == [MODEL]
    second = log(alice_client, model=MODEL, cursor=query["cursor"][0])
    assert len(shown(second)) == 5
    assert second.context["page"].older is None and second.context["page"].newer
    back = log(alice_client, model=MODEL, cursor=second.context["page"].newer)
    assert shown(back) == shown(first)


def test_a_forged_or_foreign_cursor_is_refused(
    alice_client: Client, bob_client: Client, people: dict[str, Any]
) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    for n in range(3):
        record(alice.account, laptop, n)
    first = requestlog.page(alice.account, requestlog.Filters(), per_page=1)
    assert first.older is not None
    forged = signing.dumps([alice.account.pk, NOW.isoformat(), 1, "o"], salt="another salt")
    tampered = first.older[:-3] + ("aaa" if not first.older.endswith("aaa") else "bbb")
    for bad in (forged, tampered, "garbage", "a:b:c"):
        response = log(alice_client, cursor=bad)
        assert response.status_code == 400
        assert response.context["page"] is None
    # Alice's own cursor is no use to bob.
    response = log(bob_client, cursor=first.older)
    assert response.status_code == 400 and shown(response) == []


# ---- a request's page -------------------------------------------------------------------------


def test_a_requests_page_shows_its_usage_route_and_cost_by_price_type(
    alice_client: Client, people: dict[str, Any]
) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    request_id = record(
        alice.account,
        laptop,
        1,
        model="claude-sonnet-4",
        prompt_tokens=5000,
        completion_tokens=800,
        cached_tokens=1000,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
        reasoning_tokens=100,
        streamed=True,
        finish_reason="length",
    )
    event = UsageEvent.objects.get(request_id=request_id)
    response = alice_client.get(reverse("usage_request", args=[request_id]))
    assert response.status_code == 200
    html = response.content.decode()
    shown_lines = response.context["lines"]
    assert {line["kind"] for line in shown_lines} >= {
        "input",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "output",
        "reasoning",
    }
    assert response.context["lines_total"] == event.cost
    assert sum(line["amount"] for line in shown_lines) == event.cost  # exact here: no rounding
    for text in (
        "length",
        "claude-sonnet-4-upstream",
        "laptop",
        "1200 ms",
        "300 ms",
        f"#{event.ledger_entry.seq}",
    ):
        assert text in html, text
    assert 'data-testid="charged"' in html


def test_cost_lines_sum_to_the_cost_rounded_once() -> None:
    price = Model.objects.get(id="claude-sonnet-4").price
    assert price is not None
    p = price.as_price()
    for counts in (
        {"prompt_tokens": 1, "completion_tokens": 1},
        {"prompt_tokens": 12345, "completion_tokens": 678, "cached_tokens": 999},
        {"prompt_tokens": 7, "completion_tokens": 3, "reasoning_tokens": 2, "images": 1},
    ):
        found = lines(p, **counts)
        assert requestlog.lines_total(found) == cost(p, **counts)


def test_a_request_is_found_by_its_id(alice_client: Client, people: dict[str, Any]) -> None:
    request_id = record(people["alice"].account, people["alice_keys"][0], 1)
    response = log(alice_client, find=f"  {request_id} ")
    assert response.status_code == 302
    assert response["Location"] == reverse("usage_request", args=[request_id])
    missing = log(alice_client, find="req_nothing")
    assert missing.status_code == 200
    assert "No request with this id" in missing.content.decode()


# ---- CSV --------------------------------------------------------------------------------------


def rows_of(response: Any) -> list[dict[str, str]]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_the_csv_streams_every_matching_row_in_chunks_with_exact_money(
    alice_client: Client, people: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog, "CSV_CHUNK", 3)
    alice, laptop = people["alice"], people["alice_keys"][0]
    same = NOW - timedelta(hours=2)
    ids = [record(alice.account, laptop, n, started_at=same) for n in range(5)]
    ids += [record(alice.account, laptop, n) for n in range(10, 14)]
    record(alice.account, laptop, 20, model=OTHER_MODEL)
    laptop.name = "=cmd|' /C calc'!A0"
    laptop.save()
    response = alice_client.get(reverse("usage_requests_csv"), {"model": MODEL})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = rows_of(response)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    expected = {
        e.request_id: e for e in UsageEvent.objects.filter(account=alice.account, model_id=MODEL)
    }
    for row in rows:
        event = expected[row["request_id"]]
        assert Decimal(row["cost"]) == event.cost
        assert row["cost"] == format(event.cost, "f") and "E" not in row["cost"]
        assert row["finish_reason"] == "stop"
        assert row["key_name"].startswith("'=")  # never a formula
    assert [r["request_id"] for r in rows] == [
        e.request_id
        for e in UsageEvent.objects.filter(account=alice.account, model_id=MODEL).order_by(
            "-started_at", "-id"
        )
    ]


# ---- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(alice: Any) -> Client:
    secret = issue_management_key(account=alice.account, name="script")[1]
    return Client(headers={"Authorization": f"Bearer {secret}"})


def test_the_api_lists_requests_with_filters_and_a_cursor(
    api: Client, people: dict[str, Any]
) -> None:
    alice, (laptop, server) = people["alice"], people["alice_keys"]
    ids = [record(alice.account, laptop, n) for n in range(5)]
    record(alice.account, server, 9, model=OTHER_MODEL)
    response = api.get("/api/v1/usage/requests/", {"limit": 2, "model": MODEL})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "next"}
    assert [r["request_id"] for r in body["data"]] == ids[:2]
    row = body["data"][0]
    assert row["model"] == MODEL and row["key"] == laptop.pk and row["key_name"] == "laptop"
    assert isinstance(row["cost"], str) and Decimal(row["cost"]) > 0
    assert row["finish_reason"] == "stop" and row["streamed"] is False
    walked = [r["request_id"] for r in body["data"]]
    while body["next"]:
        body = api.get(
            "/api/v1/usage/requests/", {"limit": 2, "model": MODEL, "cursor": body["next"]}
        ).json()
        walked += [r["request_id"] for r in body["data"]]
    assert walked == ids
    assert [
        r["request_id"]
        for r in api.get("/api/v1/usage/requests/", {"key": server.pk}).json()["data"]
    ] == [f"req_{alice.account.pk}_000009"]
    for params in (
        {"cursor": "forged"},
        {"limit": "0"},
        {"limit": "5.0"},
        {"key": "1.0"},
        {"streamed": "1"},
        {"min_cost": "1e3"},
        {"status": "bogus"},
        {"since": "yesterday"},
        {"since": "2026-01-01"},
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"until": "2026-01-01T00:00:00"},
        {"model": ""},
    ):
        refused = api.get("/api/v1/usage/requests/", params)
        assert refused.status_code == 400, params
    assert api.get("/api/v1/usage/requests/", {"streamed": "true"}).json()["data"] == []


def test_the_api_gives_one_request_with_its_cost_lines(api: Client, people: dict[str, Any]) -> None:
    request_id = record(people["alice"].account, people["alice_keys"][0], 1)
    event = UsageEvent.objects.get(request_id=request_id)
    body = api.get(f"/api/v1/usage/requests/{request_id}/").json()
    assert body["request_id"] == request_id
    assert {line["kind"] for line in body["cost_lines"]} == {"input", "cached_input", "output"}
    total = sum(Decimal(line["amount"]) for line in body["cost_lines"])
    assert total.quantize(Decimal("1e-9"), rounding=ROUND_CEILING) == event.cost
    assert body["ledger_entry"]["seq"] == event.ledger_entry.seq
    assert api.get("/api/v1/usage/requests/req_missing/").status_code == 404


def test_the_api_csv_streams_the_filtered_log(api: Client, people: dict[str, Any]) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    ids = [record(alice.account, laptop, n) for n in range(3)]
    response = api.get("/api/v1/usage/requests/export.csv", {"model": MODEL})
    assert response.status_code == 200
    assert [r["request_id"] for r in rows_of(response)] == ids
    assert api.get("/api/v1/usage/requests/export.csv", {"min_cost": "x"}).status_code == 400


def test_the_balance_api_gives_the_ledgers_figures(api: Client, people: dict[str, Any]) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    record(alice.account, laptop, 1)
    event = UsageEvent.objects.get(account=alice.account)
    body = api.get("/api/v1/balance/").json()
    assert body["currency"] == "USD"
    assert Decimal(body["usage_total"]) == event.cost
    assert Decimal(body["credits_total"]) == Decimal(10)
    assert Decimal(body["topups_total"]) == 0
    assert Decimal(body["balance"]) == Decimal(10) - event.cost
    assert Decimal(body["available"]) == Decimal(body["balance"]) - Decimal(body["on_hold"])
    assert all(isinstance(body[k], str) for k in ("balance", "on_hold", "available"))


# ---- isolation --------------------------------------------------------------------------------


def test_bob_never_sees_alices_requests(
    alice_client: Client, bob: Any, bob_client: Client, people: dict[str, Any]
) -> None:
    alice, laptop = people["alice"], people["alice_keys"][0]
    ids = [record(alice.account, laptop, n) for n in range(3)]
    mine = record(bob.account, people["bob_key"], 1)
    alice_page = requestlog.page(alice.account, requestlog.Filters(), per_page=1)
    bob_api = Client(
        headers={
            "Authorization": f"Bearer {issue_management_key(account=bob.account, name='b')[1]}"
        }
    )
    # The log, by key filter with alice's key id, by alice's cursor.
    assert shown(log(bob_client)) == [mine]
    by_key = log(bob_client, key=laptop.pk)
    assert by_key.status_code == 400 and shown(by_key) == []  # not one of his keys
    assert log(bob_client, cursor=alice_page.older).status_code == 400
    # A request's page, and the find box.
    for request_id in ids:
        assert bob_client.get(reverse("usage_request", args=[request_id])).status_code == 404
        found = log(bob_client, find=request_id)
        assert found.status_code == 200 and "No request with this id" in found.content.decode()
    # The CSV.
    assert [r["request_id"] for r in rows_of(bob_client.get(reverse("usage_requests_csv")))] == [
        mine
    ]
    assert bob_client.get(reverse("usage_requests_csv"), {"key": laptop.pk}).status_code == 400
    # The API: list, by key id, by cursor, one request, the CSV.
    assert [r["request_id"] for r in bob_api.get("/api/v1/usage/requests/").json()["data"]] == [
        mine
    ]
    assert bob_api.get("/api/v1/usage/requests/", {"key": laptop.pk}).json()["data"] == []
    assert bob_api.get("/api/v1/usage/requests/", {"cursor": alice_page.older}).status_code == 400
    for request_id in ids:
        assert bob_api.get(f"/api/v1/usage/requests/{request_id}/").status_code == 404
    api_csv = bob_api.get("/api/v1/usage/requests/export.csv", {"key": laptop.pk})
    assert rows_of(api_csv) == []
    # His balance is his.
    assert (
        Decimal(bob_api.get("/api/v1/balance/").json()["usage_total"])
        == UsageEvent.objects.get(request_id=mine).cost
    )


def test_signed_out_visitors_are_sent_to_sign_in(people: dict[str, Any]) -> None:
    request_id = record(people["alice"].account, people["alice_keys"][0], 1)
    client = Client()
    for url in (
        reverse("usage_requests"),
        reverse("usage_request", args=[request_id]),
        reverse("usage_requests_csv"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "login" in response["Location"]
    for path in (
        "/api/v1/usage/requests/",
        f"/api/v1/usage/requests/{request_id}/",
        "/api/v1/balance/",
    ):
        assert client.get(path).status_code in (401, 403)


def test_dates_today_are_accepted(alice_client: Client, people: dict[str, Any]) -> None:
    request_id = record(people["alice"].account, people["alice_keys"][0], 0)
    today = date.today()
    assert request_id in shown(
        log(alice_client, since=today - timedelta(days=1), until=today + timedelta(days=1))
    )
