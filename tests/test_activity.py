"""The activity page, its CSV export and GET /api/v1/usage/ (issue 14): figures read from the
rollups equal the sums of the raw events (and the ledger) in any time zone, across DST changes
and monthly partitions; the previous period, group-by and the key/model drill-down; bad input
is a form error, never a 500; and bob never sees anything of alice's."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import activity, partitions, usage
from billing.models import LedgerEntry, UsageEvent
from billing.rollups import hour_of
from keys.services import issue_key

from .conftest import credit, signed_in

NOW = datetime.now(UTC)
ZONES = ["UTC", "Asia/Kolkata", "America/New_York", "Australia/Adelaide", "Asia/Kathmandu"]
STATUSES = ["ok", "ok", "ok", "error", "client_closed"]


def _transitions(zone: ZoneInfo) -> list[datetime]:
    """The DST changes of ``zone`` in the 300 days before the last week (in UTC, to the hour)."""
    found = []
    moment = hour_of(NOW - timedelta(days=300))
    offset = moment.astimezone(zone).utcoffset()
    while moment < NOW - timedelta(days=7):
        moment += timedelta(hours=1)
        current = moment.astimezone(zone).utcoffset()
        if current != offset:
            found.append(moment)
            offset = current
    return found


# Instants the events gather around: month starts (the raw events' partitions) one and two
# months back, and New York's DST changes of the past year.
CENTRES = [
    datetime(*partitions.add_months(partitions.month_start(NOW), -n).timetuple()[:3], tzinfo=UTC)
    for n in (1, 2)
] + _transitions(ZoneInfo("America/New_York"))


@pytest.fixture
def people(make_user: Any) -> dict[str, Any]:
    """alice and bob, with two keys each and plenty of credit."""
    found: dict[str, Any] = {}
    for name in ("alice", "bob"):
        user = make_user(f"{name}@example.com")
        credit(user, 1_000_000)
        keys = [issue_key(account=user.account, name=f"{name}-{i}")[0].pk for i in range(2)]
        found[name] = (user, keys)
    return found


def event(account: int, key: int | None, started: datetime, **figures: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{account}-{started.timestamp()}-{figures.pop('n', 0)}",
        "account": account,
        "key": key,
        "model": figures.pop("model", "m-large"),
        "provider": figures.pop("provider", "mistral"),
        "cost": str(figures.pop("cost", "0.5")),
        "started_at": started.timestamp(),
        **figures,
    }


def raw_figures(e: UsageEvent) -> list[Any]:
    return [
        1,
        int(e.status != "ok"),
        *(getattr(e, name) for name in activity.FIGURES[2:-1]),
        e.cost,
    ]


def expected(
    period: activity.Period,
    account_id: int,
    dims: tuple[str, ...],
    *,
    key_id: int | None = None,
    model_id: str | None = None,
    bucketed: bool = True,
) -> dict[tuple[int, tuple[Any, ...]], list[Any]]:
    """What the rollups should say, summed from the raw events by the rule of
    billing.rollups: an event counts in the bucket in which its UTC hour starts."""
    bounds = list(period.boundaries)
    out: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
    events = UsageEvent.objects.filter(account_id=account_id)
    if key_id is not None:
        events = events.filter(key_id=key_id)
    if model_id is not None:
        events = events.filter(model_id=model_id)
    for e in events:
        hour = hour_of(e.started_at)
        if not bounds[0] <= hour < bounds[-1]:
            continue
        index = max(i for i, b in enumerate(bounds) if b <= hour) if bucketed else 0
        slot = (index, tuple(getattr(e, d) for d in dims))
        figures = out.setdefault(slot, activity.zero())
        activity.add_to(figures, raw_figures(e))
    return out


def reset_usage() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE billing_usageevent, billing_hourlyusage, billing_dailyusage")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_it_reads_exactly_what_the_raw_events_add_up_to(people: dict[str, Any], data: Any) -> None:
    """Random events around month starts and DST changes, read back by local day (and by hour)
    in zones with whole, half and quarter-hour offsets: every bucket, the totals, the previous
    period and each filter equal the raw events' sums to the nano-dollar."""
    reset_usage()
    owners = [(user.account.pk, keys) for user, keys in people.values()]
    centre = data.draw(st.sampled_from(CENTRES), label="centre")
    events = []
    for n in range(data.draw(st.integers(1, 40), label="count")):
        account, keys = data.draw(st.sampled_from(owners))
        started = centre + timedelta(seconds=data.draw(st.integers(-4 * 86400, 4 * 86400)))
        events.append(
            event(
                account,
                data.draw(st.sampled_from([*keys, None])),
                started,
                n=n,
                model=data.draw(st.sampled_from(["m-large", "m-small"])),
                provider=data.draw(st.sampled_from(["mistral", "openai"])),
                cost=Decimal(data.draw(st.integers(0, 10**10))).scaleb(-9),
                prompt_tokens=data.draw(st.integers(0, 10**6)),
                completion_tokens=data.draw(st.integers(0, 10**5)),
                cached_tokens=data.draw(st.integers(0, 10**4)),
                reasoning_tokens=data.draw(st.integers(0, 10**4)),
                status=data.draw(st.sampled_from(STATUSES)),
            )
        )
    usage.record_batch(events)

    zone = ZoneInfo(data.draw(st.sampled_from(ZONES), label="zone"))
    first = centre.astimezone(zone).date() - timedelta(days=data.draw(st.integers(0, 4)))
    last = first + timedelta(days=data.draw(st.integers(0, 5)))
    granularity = data.draw(st.sampled_from(["day", "day", "hour"]), label="granularity")
    period = activity.days(first, last, zone, granularity)
    user, keys = people["alice"]
    account = user.account
    dims = ("key_id", "model_id", "provider")
    scope = activity.Scope(account)
    assert activity.sums(scope, period, dims) == expected(period, account.pk, dims)
    assert activity.sums(scope, period, ("model_id",), bucketed=False) == expected(
        period, account.pk, ("model_id",), bucketed=False
    )
    previous = period.previous()
    assert previous.end == period.start
    # As many local days before (in hours, a DST change between them makes one an hour longer).
    assert previous.first_day is not None and period.first_day is not None
    assert previous.last_day is not None and period.last_day is not None
    assert previous.last_day - previous.first_day == period.last_day - period.first_day
    if granularity == "day":
        assert len(previous.labels) == len(period.labels)
    assert activity.totals(scope, previous) == (
        expected(previous, account.pk, (), bucketed=False).get((0, ()), activity.zero())
    )
    # The export's rows (streamed straight from the hourly rows, by hour) add up the same.
    exported = list(activity.export_rows(scope, period))
    assert sum((row[-1] for row in exported), Decimal(0)) == sum(
        (f[-1] for f in expected(period, account.pk, ()).values()), Decimal(0)
    )
    assert len({tuple(row[:5]) for row in exported}) == len(exported)
    narrowed = activity.Scope(account, keys[0], "m-small")
    assert activity.sums(narrowed, period, ("provider",)) == expected(
        period, account.pk, ("provider",), key_id=keys[0], model_id="m-small"
    )


@pytest.mark.django_db
def test_the_corrections_read_the_hourly_rows_from_the_unique_index_alone() -> None:
    """Migration billing 0008's unique index holds every column the page reads from an hourly
    row (its key columns and its INCLUDE columns), so PostgreSQL answers the corrections by an
    index-only scan (a figure added to the page must be added to the index too), and the
    upserts still find it as their arbiter."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid), indisunique FROM pg_index"
            " WHERE indexrelid = 'hourly_usage_unique'::regclass"
        )
        definition, unique = cursor.fetchone()
        cursor.execute("SELECT to_regclass('hourly_usage_covering')")
        assert cursor.fetchone() == (None,)
    assert unique
    keyed = re.search(r"USING btree \((.*)\) INCLUDE \((.*)\)", definition)
    assert keyed is not None
    assert keyed.group(1).startswith("account_id, hour, ")
    columns = {c.strip() for part in keyed.groups() for c in part.split(",")}
    assert {*activity.FIGURES, *activity.DIMENSIONS.values()} <= columns


@pytest.mark.django_db
def test_every_hourly_upsert_writes_two_indexes_and_the_key_stays_a_foreign_key() -> None:
    """An hourly upsert is never a HOT update (the unique index carries the figures), so it
    writes every index of the table: migration billing 0009 leaves two, the primary key and
    the unique index, and keeps the constraint that ``key_id`` names a key."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text FROM pg_index"
            " WHERE indrelid = 'billing_hourlyusage'::regclass"
        )
        indexes = {name for (name,) in cursor.fetchall()}
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'billing_hourlyusage'::regclass AND contype = 'f'"
        )
        foreign = {definition for (definition,) in cursor.fetchall()}
    assert indexes == {"billing_hourlyusage_pkey", "hourly_usage_unique"}
    assert any(d.startswith("FOREIGN KEY (key_id) REFERENCES keys_apikey(id)") for d in foreign)


def test_a_local_day_in_new_york_and_kolkata_is_cut_where_the_docs_say() -> None:
    """Day boundaries: New York's midnight (05:00 UTC in winter, 04:00 in summer); Kolkata's
    (18:30 UTC) whose straddling hour counts in the day in which it starts."""
    ny = activity.days(date(2026, 10, 31), date(2026, 11, 2), ZoneInfo("America/New_York"))
    assert [b.isoformat() for b in ny.boundaries] == [
        "2026-10-31T04:00:00+00:00",
        "2026-11-01T04:00:00+00:00",
        "2026-11-02T05:00:00+00:00",  # the 25-hour day of the change
        "2026-11-03T05:00:00+00:00",
    ]
    hours = activity.days(date(2026, 11, 1), date(2026, 11, 1), ZoneInfo("Asia/Kolkata"), "hour")
    assert hours.boundaries[0] == datetime(2026, 10, 31, 19, tzinfo=UTC)
    assert hours.boundaries[-1] == datetime(2026, 11, 1, 19, tzinfo=UTC)
    assert hours.labels[0] == "2026-11-01 00:30"


# ---- the page ------------------------------------------------------------------------------


def figure(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', html)
    assert match, testid
    return match.group(1).strip()


def value_of(html: str, testid: str) -> Decimal:
    match = re.search(rf'data-testid="{testid}" data-value="([^"]*)"', html)
    assert match, testid
    return Decimal(match.group(1))


@pytest.fixture
def recorded(people: dict[str, Any]) -> dict[str, Any]:
    """alice's usage: this week, last week and long ago; bob's one request."""
    alice, (laptop, server) = people["alice"]
    bob, (bob_key, _) = people["bob"]
    now = timezone.now()
    rows = [
        event(alice.account.pk, laptop, now - timedelta(hours=1), n=1, cost="1.000000001"),
        event(alice.account.pk, server, now - timedelta(days=2), n=2, cost="2", model="m-small"),
        event(alice.account.pk, server, now - timedelta(days=3), n=3, cost="0.25", status="error"),
        event(alice.account.pk, laptop, now - timedelta(days=9), n=4, cost="2"),
        event(alice.account.pk, laptop, now - timedelta(days=60), n=5, cost="7"),
        event(bob.account.pk, bob_key, now - timedelta(hours=2), n=6, cost="5", model="bobs-model"),
    ]
    for row in rows:
        row.update(prompt_tokens=100, completion_tokens=10, cached_tokens=3, reasoning_tokens=2)
    usage.record_batch(rows)
    return {"alice": alice, "bob": bob, "laptop": laptop, "server": server, "bob_key": bob_key}


def test_it_shows_totals_against_the_previous_period(recorded: dict[str, Any]) -> None:
    client = signed_in(recorded["alice"])
    html = client.get("/usage/?range=7d").content.decode()
    assert value_of(html, "total-spend") == Decimal("3.250000001")
    assert figure(html, "total-requests") == "3"
    assert figure(html, "total-errors") == "1"
    assert figure(html, "total-input-tokens") == "300"
    assert figure(html, "total-output-tokens") == "30"
    assert figure(html, "total-cached-tokens") == "9"
    assert figure(html, "total-reasoning-tokens") == "6"
    assert value_of(html, "stat-spend") == Decimal("3.250000001")
    assert "$2.00" in figure(html, "previous-spend")
    assert figure(html, "change-spend") == "+62.5%"
    assert figure(html, "change-requests") == "+200.0%"
    assert "bobs-model" not in html
    # No request went through alice's own provider keys: no such figure.
    assert 'data-testid="stat-byok-requests"' not in html
    # 30 days take in the request of nine days ago; 90 days the one of sixty.
    html = client.get("/usage/").content.decode()
    assert value_of(html, "total-spend") == Decimal("5.250000001")
    html = client.get("/usage/?range=90d").content.decode()
    assert value_of(html, "total-spend") == Decimal("12.250000001")
    html = client.get("/usage/?range=24h").content.decode()
    assert value_of(html, "total-spend") == Decimal("1.000000001")


def test_the_30_day_spend_is_the_ledgers_usage_debits(recorded: dict[str, Any]) -> None:
    """Every recorded event is debited once: the page's figure (all of alice's usage lies
    in 90 days) equals the ledger's usage debits."""
    alice = recorded["alice"]
    debits = LedgerEntry.objects.filter(account=alice.account, kind="usage").aggregate(
        s=Sum("amount")
    )["s"]
    html = signed_in(alice).get("/usage/?range=90d").content.decode()
    assert value_of(html, "total-spend") == -debits


def test_it_groups_and_drills_down(recorded: dict[str, Any]) -> None:
    client = signed_in(recorded["alice"])
    html = client.get("/usage/?range=7d&group_by=key").content.decode()
    chart = orjson.loads(re.search(r'id="activity-chart"[^>]*>([^<]*)<', html).group(1))
    assert chart["stacked"] is True
    assert {d["label"] for d in chart["datasets"]} == {"alice-0", "alice-1"}
    assert sum(Decimal(v) for d in chart["datasets"] for v in d["data"]) == Decimal("3.250000001")
    # The breakdown rows link to the same page narrowed to their model or key.
    by_model = html[html.index('data-testid="by-model"') :]
    link = re.search(r'<a href="(\?[^"]*model=m-small[^"]*)"', by_model).group(1)
    assert "range=7d" in link
    narrowed = client.get("/usage/" + link.replace("&amp;", "&")).content.decode()
    assert value_of(narrowed, "total-spend") == Decimal("2")
    html = client.get(f"/usage/?range=7d&key={recorded['laptop']}").content.decode()
    assert value_of(html, "total-spend") == Decimal("1.000000001")
    html = client.get(f"/usage/?range=7d&key={recorded['server']}&model=m-large").content.decode()
    assert value_of(html, "total-spend") == Decimal("0.25")
    assert figure(html, "total-errors") == "1"
    html = client.get("/usage/?range=7d&group_by=provider").content.decode()
    assert "mistral" in html


@pytest.mark.parametrize(
    "query",
    [
        "range=custom&from=2026-12-01&to=2026-11-01",
        "range=custom&from=2026-11-01",
        "from=garbage&to=2026-11-01",
        "range=custom&from=2000-01-01&to=2026-11-01",
        "range=custom&from=1000-01-01&to=1000-01-02",
        "range=custom&from=2026-01-01&to=9999-12-31",
        "range=forever",
        "group_by=colour",
        "key=abc",
        "key=99999999999999999999999",
        "model=" + "x" * 500,
    ],
)
def test_bad_input_is_a_form_error_never_a_500(recorded: dict[str, Any], query: str) -> None:
    client = signed_in(recorded["alice"])
    response = client.get(f"/usage/?{query}")
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert client.get(f"/usage/export.csv?{query}").status_code == 400


def test_a_custom_range_is_whole_local_days(recorded: dict[str, Any]) -> None:
    client = signed_in(recorded["alice"])
    today = timezone.now().date()
    first = today - timedelta(days=9)
    html = client.get(
        f"/usage/?range=custom&from={first}&to={first + timedelta(days=6)}"
    ).content.decode()
    assert value_of(html, "total-spend") == Decimal("2.25")
    assert html.count('data-figure="spend"') >= 7


# ---- the export ----------------------------------------------------------------------------


def test_the_export_streams_the_rollups_as_exact_csv(recorded: dict[str, Any]) -> None:
    client = signed_in(recorded["alice"])
    response = client.get("/usage/export.csv?range=7d")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    chunks = iter(response.streaming_content)
    header = next(chunks).decode()
    assert header.startswith("day,key_id,key_name,model,provider,requests,errors,")
    rows = list(csv.DictReader(io.StringIO(header + b"".join(chunks).decode())))
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("3.250000001")
    assert "1.000000001" in {r["cost_usd"] for r in rows}
    assert {r["key_name"] for r in rows} == {"alice-0", "alice-1"}
    hourly = client.get("/usage/export.csv?range=7d&granularity=hour&model=m-small")
    rows = list(csv.DictReader(io.StringIO(b"".join(hourly.streaming_content).decode())))
    assert [r["cost_usd"] for r in rows] == ["2.00"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[0]["hour"])


# ---- the API ---------------------------------------------------------------------------------


def test_the_api_answers_totals_series_and_the_previous_period(recorded: dict[str, Any]) -> None:
    client = signed_in(recorded["alice"])
    today = timezone.now().date()
    body = client.get(
        f"/api/v1/usage/?from={today - timedelta(days=6)}&to={today}&group_by=model&tz=UTC"
    ).json()
    assert body["time_zone"] == "UTC"
    assert body["totals"]["cost"] == "3.250000001"
    assert body["totals"]["requests"] == 3
    assert body["totals"]["errors"] == 1
    assert body["previous"]["cost"] == "2.000000000"
    assert body["previous"]["end"] == body["totals"]["start"]
    assert {p["group"] for p in body["series"]} == {"m-large", "m-small"}
    assert sum(Decimal(p["cost"]) for p in body["series"]) == Decimal("3.250000001")
    body = client.get(
        f"/api/v1/usage/?granularity=hour&group_by=key&key={recorded['server']}&tz=Asia/Kolkata"
    ).json()
    assert body["totals"]["cost"] == "2.250000000"
    assert {p["group_name"] for p in body["series"]} == {"alice-1"}
    assert all(p["start"].endswith("+05:30") for p in body["series"])
    assert client.get("/api/v1/usage/?tz=Mars/Olympus").status_code == 400
    assert client.get("/api/v1/usage/?from=2026-02-01&to=2026-01-01").status_code == 400
    assert client.get("/api/v1/usage/?from=2020-01-01&to=2026-01-01").status_code == 400
    assert client.get("/api/v1/usage/?group_by=colour").status_code == 400
    assert Client().get("/api/v1/usage/").status_code in (401, 403)


def test_the_api_takes_a_management_key(recorded: dict[str, Any]) -> None:
    from keys.services import issue_management_key

    secret = issue_management_key(account=recorded["alice"].account, name="script")[1]
    client = Client(headers={"Authorization": f"Bearer {secret}"})
    body = client.get("/api/v1/usage/?from=2000-01-01&to=2000-01-31").json()
    assert body["totals"]["cost"] == "0.000000000"
    assert client.get("/api/v1/usage/").json()["totals"]["cost"] == "5.250000001"


# ---- isolation -----------------------------------------------------------------------------


def test_bob_never_sees_alices_usage(recorded: dict[str, Any]) -> None:
    bob = signed_in(recorded["bob"])
    laptop = recorded["laptop"]
    for query in ("", "?range=90d", "?model=m-large", "?range=90d&group_by=key"):
        html = bob.get(f"/usage/{query}").content.decode()
        assert "alice" not in html
        assert "1.000000001" not in html and "m-small" not in html
    html = bob.get("/usage/?range=7d").content.decode()
    assert value_of(html, "total-spend") == Decimal(5)
    response = bob.get(f"/usage/?key={laptop}")
    assert response.status_code == 400 and "alice" not in response.content.decode()
    html = bob.get("/usage/?range=90d&model=m-large").content.decode()
    assert value_of(html, "total-spend") == 0

    assert bob.get(f"/usage/export.csv?key={laptop}").status_code == 400
    export = b"".join(bob.get("/usage/export.csv?range=90d&model=m-large").streaming_content)
    assert export.decode().count("\n") == 1  # the header alone
    export = b"".join(bob.get("/usage/export.csv?range=90d").streaming_content).decode()
    assert "alice" not in export and "bobs-model" in export

    assert bob.get(f"/api/v1/usage/?key={laptop}").status_code == 404
    body = bob.get("/api/v1/usage/?model=m-large&group_by=key").json()
    assert body["totals"]["cost"] == "0.000000000" and body["series"] == []
    assert "alice" not in bob.get("/api/v1/usage/?group_by=key").content.decode()

    alice = signed_in(recorded["alice"])
    alice.post("/account/time-zone/", {"time_zone": "Asia/Kolkata"})
    page = bob.get("/account/time-zone/").content.decode()
    assert "Your pages count days in UTC." in page


# ---- the time zone ---------------------------------------------------------------------------


def test_the_time_zone_setting_is_used_by_the_page_and_the_api(recorded: dict[str, Any]) -> None:
    alice = recorded["alice"]
    client = signed_in(alice)
    page = client.get("/account/time-zone/")
    assert page.status_code == 200
    assert '<option value="Asia/Kolkata"' in page.content.decode()
    assert client.post("/account/time-zone/", {"time_zone": "Nowhere/Atlantis"}).status_code == 400
    assert client.post("/account/time-zone/", {"time_zone": "../../etc/passwd"}).status_code == 400
    assert client.post("/account/time-zone/", {"time_zone": "Asia/Kolkata"}).status_code == 302
    alice.refresh_from_db()
    assert alice.time_zone == "Asia/Kolkata"
    assert "time zone Asia/Kolkata" in client.get("/usage/").content.decode()
    assert client.get("/api/v1/usage/").json()["time_zone"] == "Asia/Kolkata"
    # Blank: the browser's zone (the cookie app.js keeps), else UTC.
    client.post("/account/time-zone/", {"time_zone": ""})
    assert "time zone UTC" in client.get("/usage/").content.decode()
    client.cookies["tp_tz"] = "America/New_York"
    assert "time zone America/New_York" in client.get("/usage/").content.decode()
    client.cookies["tp_tz"] = "not a zone"
    assert "time zone UTC" in client.get("/usage/").content.decode()


def test_the_account_menu_links_the_time_zone_and_the_page_links_the_log(
    recorded: dict[str, Any],
) -> None:
    client = signed_in(recorded["alice"])
    assert 'href="/account/time-zone/"' in client.get("/account/data/").content.decode()
    html = client.get("/usage/").content.decode()
    assert 'href="/usage/export.csv"' in html
