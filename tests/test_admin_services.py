"""The admin goes through the services: every write an operator makes there (keys and their
limits, revocation, providers, models, routes, price versions, users, ledger adjustments) has
the service's effect in Redis, where the relays read it. Revoked keys and management keys never
come back; catalog edits made in the admin survive `loadcatalog`."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
import redis as redis_lib
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing import sync as billing_sync
from billing.models import LedgerEntry
from catalog.models import Model, PriceVersion, Provider, Route, Source
from core import state
from core.pricing import to_nanos
from keys.models import ApiKey, ManagementKey, ProviderCredential
from keys.services import issue_key, issue_management_key
from lib.secrets import box

pytestmark = pytest.mark.usefixtures("catalog")
STAFF_PASSWORD = "an operator's long passphrase"


# ---- an operator's browser, and the forms of the admin's pages --------------------------------


@pytest.fixture
def admin_client(transactional_db: None) -> Client:
    """A superuser without a second factor (`manage.py adduser --staff`), signed in."""
    call_command(
        "adduser", "ops@example.com", "--password", STAFF_PASSWORD, "--staff", stdout=io.StringIO()
    )
    client = Client()
    client.force_login(get_user_model().objects.get(email="ops@example.com"))
    return client


CUSTOMER_PASSWORD = "kim's long and unguessable passphrase"


@pytest.fixture
def customer(make_user: Any) -> Any:
    user = make_user("kim@example.com", CUSTOMER_PASSWORD)
    call_command("credit", "kim@example.com", "10", stdout=io.StringIO())
    return user


class _FormReader(HTMLParser):
    """What a browser would post from the admin's form (the one whose id ends in "_form"):
    inputs with their values, ticked boxes, selected options, text areas."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self.inside = False
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id", "").endswith("_form")
        if not self.inside or (not a.get("name") and tag != "option"):
            return
        name = a.get("name", "")
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("submit", "button", "file"):
                return
            ticks = kind in ("checkbox", "radio")
            if ticks and "checked" not in a:
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if ticks else ""))
        elif tag == "select":
            self.select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self.select and "selected" in a:
            self.data[self.select].append(a.get("value", ""))
        elif tag == "textarea":
            self.textarea = name
            self.data[name] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.textarea:
            values = self.data[self.textarea]
            # A browser drops the newline that follows <textarea>.
            values[-1] += data if values[-1] else data.removeprefix("\n")


def form_of(client: Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    reader = _FormReader()
    reader.feed(response.content.decode())
    return {k: v if len(v) != 1 else v[0] for k, v in reader.data.items()}


def submit(client: Client, url: str, **changes: Any) -> Any:
    """The page's form as it stands, with ``changes`` (None: unticked or left out)."""
    data = form_of(client, url)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return client.post(url, data)


def errors(response: Any) -> Any:
    """The form's errors, for an assertion's message."""
    context = response.context or {}
    if "adminform" in context:
        return context["adminform"].form.errors, context.get("errors")
    return response.status_code


def catalog_in_redis(redis_client: redis_lib.Redis) -> dict[str, Any]:
    return json.loads(redis_client.get(state.CATALOG) or "{}")


def key_record(redis_client: redis_lib.Redis, key: ApiKey) -> dict[str, Any] | None:
    raw = redis_client.get(state.key_record(key.digest))
    return json.loads(raw) if raw else None


def change_url(obj: Any) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def changelist_url(model: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def act(client: Client, model: Any, action: str, *objects: Any) -> Any:
    return client.post(
        changelist_url(model), {"action": action, "_selected_action": [o.pk for o in objects]}
    )


# ---- keys ----------------------------------------------------------------------------------


def test_it_edits_a_keys_name_and_limits_and_the_relays_see_them(
    admin_client: Client, customer: Any, redis_client: redis_lib.Redis
) -> None:
    key, _ = issue_key(account=customer.account, name="ci")
    assert key_record(redis_client, key)["models"] == []
    response = submit(
        admin_client,
        change_url(key),
        name="build server",
        allowed_models=["mistral-small", "codestral"],
        allowed_ips="10.0.0.0/8\n2001:db8::/32",
        rpm_limit="30",
        spend_cap="2.5",
        spend_cap_period="day",
    )
    assert response.status_code == 302, errors(response)
    record = key_record(redis_client, key)
    assert record is not None
    assert record["models"] == ["mistral-small", "codestral"]
    assert record["ips"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert record["rpm"] == 30
    assert record["cap"] == to_nanos(Decimal("2.5")) and record["cap_period"] == "day"
    key.refresh_from_db()
    assert key.name == "build server"


def test_a_bad_limit_changes_nothing(
    admin_client: Client, customer: Any, redis_client: redis_lib.Redis
) -> None:
    key, _ = issue_key(account=customer.account, name="ci")
    response = submit(admin_client, change_url(key), allowed_ips="not-an-address", rpm_limit="5")
    assert response.status_code == 200 and "not an IP address" in response.content.decode()
    assert key_record(redis_client, key)["rpm"] is None


def test_revoked_keys_are_read_only_for_good(
    admin_client: Client, customer: Any, redis_client: redis_lib.Redis
) -> None:
    key, _ = issue_key(account=customer.account, name="ci")
    other, _ = issue_key(account=customer.account, name="kept")
    assert act(admin_client, ApiKey, "revoke_keys", key).status_code == 302
    key.refresh_from_db()
    assert key.status == ApiKey.Status.REVOKED and key.revoked_at is not None
    assert key_record(redis_client, key) is None
    assert key_record(redis_client, other) is not None

    page = admin_client.get(change_url(key)).content.decode()
    assert 'name="name"' not in page and 'name="allowed_models"' not in page
    posted = admin_client.post(
        change_url(key), {"name": "back", "allowed_models": [], "spend_cap_period": "month"}
    )
    assert posted.status_code == 403
    key.refresh_from_db()
    assert key.status == ApiKey.Status.REVOKED and key.name == "ci"
    assert key_record(redis_client, key) is None
    # Keys are issued by their users, never here, and never deleted.
    assert admin_client.get(reverse("admin:keys_apikey_add")).status_code == 403
    delete = reverse("admin:keys_apikey_delete", args=[other.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert ApiKey.objects.filter(pk=other.pk).exists()


def test_management_keys_are_revoked_for_good(admin_client: Client, customer: Any) -> None:
    key, secret = issue_management_key(account=customer.account, name="deploy")
    api = reverse("api_keys")
    assert Client().get(api, HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    assert act(admin_client, ManagementKey, "revoke_keys", key).status_code == 302
    key.refresh_from_db()
    revoked_at = key.revoked_at
    assert revoked_at is not None
    assert Client().get(api, HTTP_AUTHORIZATION=f"Bearer {secret}").status_code in (401, 403)

    assert admin_client.post(change_url(key), {"name": "x", "revoked_at": ""}).status_code == 403
    assert 'name="revoked_at"' not in admin_client.get(change_url(key)).content.decode()
    assert admin_client.get(reverse("admin:keys_managementkey_add")).status_code == 403
    delete = reverse("admin:keys_managementkey_delete", args=[key.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    act(admin_client, ManagementKey, "revoke_keys", key)  # again: nothing moves
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


def test_provider_keys_are_listed_never_shown_and_never_changed_here(
    admin_client: Client, customer: Any
) -> None:
    from django.utils import timezone

    from lib.secrets import encrypt

    secret = "sk-customer-own-key-9f3a"
    credential = ProviderCredential.objects.create(
        account=customer.account,
        provider=Provider.objects.get(slug="mistral"),
        api_key=encrypt(secret),
        last4=secret[-4:],
        checked_at=timezone.now(),
        added_by=customer,
    )
    listing = admin_client.get(reverse("admin:keys_providercredential_changelist"))
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "…9f3a" in page and customer.email in page
    assert secret not in page and credential.api_key not in page
    detail = admin_client.get(
        reverse("admin:keys_providercredential_change", args=[credential.pk])
    ).content.decode()
    assert secret not in detail and credential.api_key not in detail
    # Read-only: no add, no edit, no delete.
    assert admin_client.get(reverse("admin:keys_providercredential_add")).status_code == 403
    delete = reverse("admin:keys_providercredential_delete", args=[credential.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert ProviderCredential.objects.filter(pk=credential.pk).exists()


# ---- the catalog -------------------------------------------------------------------------------


def test_a_provider_key_is_write_only_and_reaches_the_relays_encrypted(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    provider = Provider.objects.get(slug="mistral")
    secret = "mistral-live-key-0123456789abcdef"
    url = change_url(provider)
    assert submit(admin_client, url, new_api_key=secret).status_code == 302
    provider.refresh_from_db()
    assert provider.api_key and secret not in provider.api_key
    assert box().decrypt(provider.api_key) == secret
    assert provider.source == Source.FILE  # a key is not one of the file's values

    page = admin_client.get(url).content.decode()
    assert secret not in page and provider.api_key not in page
    assert "API key stored" in page and "Leave empty to keep the current key" in page
    assert "Remove the stored key" in page

    route = catalog_in_redis(redis_client)["models"]["mistral-small"]["routes"][0]
    assert route["base_url"] == "https://api.mistral.ai/v1" and not route["demo"]
    assert "api_key" not in route and box().decrypt(route["api_key_encrypted"]) == secret
    assert secret not in redis_client.get(state.CATALOG)

    # Saved again with the field left empty: the stored key stays.
    assert submit(admin_client, url, name="Mistral").status_code == 302
    provider.refresh_from_db()
    assert box().decrypt(provider.api_key) == secret and provider.source == Source.ADMIN

    both = submit(admin_client, url, new_api_key="another", remove_api_key="on")
    assert both.status_code == 200 and "not both" in both.content.decode()
    assert submit(admin_client, url, remove_api_key="on").status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == ""
    assert catalog_in_redis(redis_client)["models"]["mistral-small"]["routes"][0]["demo"]


def test_a_model_switched_off_leaves_the_relays_and_stays_off_after_loadcatalog(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    model = Model.objects.get(id="codestral")
    assert submit(admin_client, change_url(model), active=None).status_code == 302
    assert "codestral" not in catalog_in_redis(redis_client)["models"]
    model.refresh_from_db()
    assert model.source == Source.ADMIN and not model.active

    out = io.StringIO()
    call_command("loadcatalog", stdout=out)
    assert "model codestral" in out.getvalue() and "Kept 1 edits" in out.getvalue()
    assert not Model.objects.get(id="codestral").active
    assert "codestral" not in catalog_in_redis(redis_client)["models"]

    call_command("loadcatalog", "--reset", stdout=io.StringIO())
    model.refresh_from_db()
    assert model.active and model.source == Source.FILE
    assert "codestral" in catalog_in_redis(redis_client)["models"]
    # Models are switched off, never deleted (usage and keys name them).
    delete = reverse("admin:catalog_model_delete", args=["codestral"])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_routes_are_added_switched_off_and_deleted_through_the_service(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    model, openai = Model.objects.get(id="mistral-small"), Provider.objects.get(slug="openai")
    response = submit(
        admin_client,
        reverse("admin:catalog_route_add"),
        model="mistral-small",
        provider=str(openai.pk),
        upstream_model="gpt-4o-mini",
        priority="1",
        weight="1",
        active="on",
    )
    assert response.status_code == 302, errors(response)
    added = Route.objects.get(model=model, provider=openai)
    assert added.source == Source.ADMIN and not added.in_file
    routes = catalog_in_redis(redis_client)["models"]["mistral-small"]["routes"]
    assert [r["upstream_model"] for r in routes] == ["mistral-small-latest", "gpt-4o-mini"]

    # The file's own route: switched off here, it stays off through loadcatalog; it cannot be
    # deleted (loadcatalog would add it back).
    own = Route.objects.get(model=model, in_file=True)
    assert submit(admin_client, change_url(own), active=None).status_code == 302
    routes = catalog_in_redis(redis_client)["models"]["mistral-small"]["routes"]
    assert [r["upstream_model"] for r in routes] == ["gpt-4o-mini"]
    out = io.StringIO()
    call_command("loadcatalog", stdout=out)
    assert "route mistral-small via mistral (mistral-small-latest)" in out.getvalue()
    own.refresh_from_db()
    assert not own.active and Route.objects.filter(pk=added.pk).exists()
    delete_own = reverse("admin:catalog_route_delete", args=[own.pk])
    assert admin_client.post(delete_own, {"post": "yes"}).status_code == 403

    delete = reverse("admin:catalog_route_delete", args=[added.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    assert not Route.objects.filter(pk=added.pk).exists()
    assert "mistral-small" not in catalog_in_redis(redis_client)["models"]  # no active route

    call_command("loadcatalog", "--reset", stdout=io.StringIO())
    own.refresh_from_db()
    assert own.active and own.source == Source.FILE
    assert "mistral-small" in catalog_in_redis(redis_client)["models"]


def test_a_price_version_is_added_never_edited(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    model = Model.objects.get(id="mistral-small")
    first = model.price
    assert first is not None and first.version == 1

    # From the model's page: its button opens the form with the model and its prices filled in.
    page = admin_client.get(change_url(model)).content.decode()
    add = f"{reverse('admin:catalog_priceversion_add')}?model=mistral-small"
    assert add in page and "Add a price version" in page
    form = form_of(admin_client, add)
    assert form["model"] == "mistral-small" and form["input"] == "0.2"

    refused = submit(admin_client, add, input="0.0000001")  # below a millionth of a dollar per 1M
    assert refused.status_code == 200 and "At most 6 decimal places" in refused.content.decode()
    response = submit(admin_client, add, input="0.25", output="0.75")
    assert response.status_code == 302 and response["Location"] == change_url(model)

    second = PriceVersion.objects.get(model=model, version=2)
    assert (second.input, second.output, second.source) == (
        Decimal("0.25"),
        Decimal("0.75"),
        Source.ADMIN,
    )
    first.refresh_from_db()
    assert (first.input, first.output) == (Decimal("0.2"), Decimal("0.6"))
    price = catalog_in_redis(redis_client)["models"]["mistral-small"]["price"]
    assert price["version"] == 2 and Decimal(price["input"]) == Decimal("0.25")

    # No version is changed or deleted.
    assert admin_client.post(change_url(first), {"input": "9"}).status_code == 403
    delete = reverse("admin:catalog_priceversion_delete", args=[first.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403

    # The file's price no longer rules this model's price until --reset.
    out = io.StringIO()
    call_command("loadcatalog", stdout=out)
    assert "price of mistral-small (v2)" in out.getvalue()
    assert Model.objects.get(id="mistral-small").price.version == 2
    call_command("loadcatalog", "--reset", stdout=io.StringIO())
    third = Model.objects.get(id="mistral-small").price
    assert (third.version, third.input, third.source) == (3, Decimal("0.2"), Source.FILE)
    assert catalog_in_redis(redis_client)["models"]["mistral-small"]["price"]["version"] == 3


def test_a_route_gets_a_price_of_its_own_that_is_not_the_models(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    model = Model.objects.get(id="mistral-small")
    route = Route.objects.create(
        model=model, provider=Provider.objects.get(slug="openai"), upstream_model="x", priority=1
    )
    add = f"{reverse('admin:catalog_priceversion_add')}?model=mistral-small"
    elsewhere = Route.objects.filter(model_id="gpt-4o").first()
    assert elsewhere is not None
    refused = submit(admin_client, add, route=str(elsewhere.pk), input="0.1", output="0.3")
    assert refused.status_code == 200
    assert "Choose a route of this model, or none." in refused.content.decode()

    response = submit(admin_client, add, route=str(route.pk), input="0.1", output="0.3")
    assert response.status_code == 302, errors(response)
    own = PriceVersion.objects.get(route=route)
    assert (own.version, own.input, own.source) == (2, Decimal("0.1"), Source.ADMIN)
    # The model's own price is unchanged: the newest version without a route.
    price = Model.objects.get(id="mistral-small").price
    assert price is not None and price.version == 1
    published = catalog_in_redis(redis_client)["models"]["mistral-small"]
    assert published["price"]["version"] == 1
    by_upstream = {r["upstream_model"]: r for r in published["routes"]}
    assert by_upstream["x"]["price"]["version"] == 2
    assert "price" not in by_upstream["mistral-small-latest"]
    # Usage keeps the version: the route cannot be deleted, only switched off.
    delete = reverse("admin:catalog_route_delete", args=[route.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_the_model_lists_action_opens_the_price_form(admin_client: Client) -> None:
    model = Model.objects.get(id="gpt-4o")
    response = act(admin_client, Model, "add_price_version", model)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:catalog_priceversion_add')}?model=gpt-4o"
    two = act(admin_client, Model, "add_price_version", model, Model.objects.get(id="codestral"))
    assert two.status_code == 302 and two["Location"] == changelist_url(Model)
    assert not PriceVersion.objects.filter(model=model, version=2).exists()


def test_a_provider_edited_in_the_admin_keeps_its_values_through_loadcatalog(
    admin_client: Client, redis_client: redis_lib.Redis
) -> None:
    provider = Provider.objects.get(slug="deepseek")
    mirror = "https://deepseek.example.com/v1"
    assert submit(admin_client, change_url(provider), base_url=mirror).status_code == 302
    out = io.StringIO()
    call_command("loadcatalog", stdout=out)
    assert "provider deepseek" in out.getvalue()
    provider.refresh_from_db()
    assert provider.base_url == mirror and provider.source == Source.ADMIN
    call_command("loadcatalog", "--reset", stdout=io.StringIO())
    provider.refresh_from_db()
    assert provider.base_url == "https://api.deepseek.com/v1" and provider.source == Source.FILE


# ---- users ---------------------------------------------------------------------------------


def test_a_deactivated_user_is_signed_out_and_their_keys_leave_the_relays(
    admin_client: Client, customer: Any, redis_client: redis_lib.Redis
) -> None:
    from allauth.usersessions.models import UserSession

    key, _ = issue_key(account=customer.account, name="ci")
    _, management_secret = issue_management_key(account=customer.account, name="m")
    browser = Client()
    browser.post(
        reverse("account_login"),
        {"login": customer.email, "password": CUSTOMER_PASSWORD},
    )
    assert browser.get(reverse("dashboard")).status_code == 200
    assert UserSession.objects.filter(user=customer).exists()

    url = change_url(customer)
    assert submit(admin_client, url, is_active=None).status_code == 302
    customer.refresh_from_db()
    assert not customer.is_active
    assert browser.get(reverse("dashboard")).status_code == 302  # to the login page
    assert not UserSession.objects.filter(user=customer).exists()
    assert key_record(redis_client, key) is None
    api = reverse("api_keys")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {management_secret}"}
    assert Client().get(api, **headers).status_code in (401, 403)
    key.refresh_from_db()
    assert key.status == ApiKey.Status.ACTIVE  # suspended, not revoked
    call_command("syncredis", stdout=io.StringIO())  # a rebuild keeps them out
    assert key_record(redis_client, key) is None

    assert submit(admin_client, url, is_active="on").status_code == 302
    assert key_record(redis_client, key) is not None
    assert Client().get(api, **headers).status_code == 200
    assert browser.get(reverse("dashboard")).status_code == 302  # signs in afresh


def test_the_user_lists_actions_deactivate_and_reactivate(
    admin_client: Client, customer: Any, redis_client: redis_lib.Redis
) -> None:
    key, _ = issue_key(account=customer.account, name="ci")
    act(admin_client, get_user_model(), "deactivate", customer)
    assert key_record(redis_client, key) is None
    act(admin_client, get_user_model(), "reactivate", customer)
    assert key_record(redis_client, key) is not None


# ---- ledger adjustments --------------------------------------------------------------------


def test_an_operator_credits_and_debits_through_the_ledger(
    admin_client: Client, customer: Any
) -> None:
    account = customer.account
    add = reverse("admin:billing_ledgerentry_add")
    page = admin_client.get(add).content.decode()
    assert "Credit or debit an account" in page and "Amount (USD)" in page and "Note" in page

    missing_note = admin_client.post(add, {"account": account.pk, "amount": "5"})
    assert missing_note.status_code == 200
    zero = admin_client.post(add, {"account": account.pk, "amount": "0", "note": "nothing"})
    assert zero.status_code == 200 and "non-zero" in zero.content.decode()
    assert LedgerEntry.objects.filter(account=account).count() == 1  # the $10 of the fixture

    assert (
        admin_client.post(
            add, {"account": account.pk, "amount": "2.5", "note": "goodwill"}
        ).status_code
        == 302
    )
    assert (
        admin_client.post(
            add, {"account": account.pk, "amount": "-0.000000001", "note": "rounding"}
        ).status_code
        == 302
    )
    credit, debit = LedgerEntry.objects.filter(account=account).order_by("seq")[1:]
    assert (credit.kind, credit.amount, credit.note) == ("adjustment", Decimal("2.5"), "goodwill")
    assert (debit.kind, debit.amount) == ("adjustment", Decimal("-0.000000001"))
    assert debit.balance_after == Decimal("12.499999999")
    assert billing_sync.figures(account.pk)["posted"] == to_nanos(Decimal("12.499999999"))

    # Append-only: no entry is changed or deleted.
    assert admin_client.post(change_url(credit), {"amount": "100"}).status_code == 403
    delete = reverse("admin:billing_ledgerentry_delete", args=[credit.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    credit.refresh_from_db()
    assert credit.amount == Decimal("2.5")
