"""Look-alike addresses: one address, however it is spelt, is one account. Invisible and
control characters are refused with a clear error; case, Unicode normal forms, fullwidth forms
in the domain and the two spellings of an internationalised domain fold into one stored form
(ASCII: the local part in lower case, the domain as IDNA A-labels). Through every door: signup,
adding or changing an address, login, password reset, ``adduser``, the admin, operator
commands."""

from __future__ import annotations

import io
import unicodedata
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.validators import validate_email as django_validate_email
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils.module_loading import autodiscover_modules
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from accounts.emails import (
    NormalizedEmailField,
    is_invisible,
    lookalikes,
    lookup_key,
    normalize_email,
)

from .conftest import PASSWORD, reauthenticated, signed_in

User = get_user_model()

# The characters of the report and their kin: zero-width, joiners, word joiner, BOM, soft
# hyphen, bidi marks and overrides, Hangul fillers, combining grapheme joiner, variation
# selectors, tags, C0 and C1 controls, exotic spaces.
INVISIBLE = [
    *"\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u061c\u180e\u034f\u3164\u115f\uffa0",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
    "\ufe0f",
    "\U000e0041",
    *(chr(c) for c in range(0x01, 0x20)),
    "\x7f",
    *(chr(c) for c in range(0x80, 0xA0)),
    "\u00a0",
    "\u2003",
    "\u3000",
    "\u2028",
]


def codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"


# ---- the function ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", INVISIBLE, ids=codepoint)
@pytest.mark.parametrize("where", ["local", "domain"])
def test_it_refuses_an_invisible_or_control_character(char: str, where: str) -> None:
    address = f"al{char}ice@example.com" if where == "local" else f"alice@exa{char}mple.com"
    with pytest.raises(ValidationError) as refused:
        normalize_email(address)
    assert refused.value.code == "invisible"
    assert codepoint(char) in refused.value.messages[0]


@pytest.mark.parametrize(
    "spelling",
    [
        "alice@example.com",
        "Alice@Example.COM",
        "  alice@example.com\n",
        "alice@ｅｘａｍｐｌｅ.com",  # fullwidth letters in the domain
        "alice@example\uff0ecom",  # fullwidth full stop
        "alice@example\u3002com",  # ideographic full stop
    ],
)
def test_it_folds_spellings_of_one_address(spelling: str) -> None:
    assert normalize_email(spelling) == "alice@example.com"


@pytest.mark.parametrize(
    "spelling",
    [
        "user@bücher.de",
        unicodedata.normalize("NFD", "user@bücher.de"),
        "user@BÜCHER.de",
        "USER@xn--bcher-kva.de",
        "user@XN--BCHER-KVA.DE",
        "user@ｂüｃｈｅｒ.de",
    ],
    ids=ascii,
)
def test_an_internationalised_domain_is_stored_as_its_a_labels(spelling: str) -> None:
    assert normalize_email(spelling) == "user@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "address",
    ["ａｌｉｃｅ@example.com", "alïce@example.com", "用户@example.com", "alice@exam ple.com"],
    ids=ascii,
)
def test_it_refuses_what_is_not_an_ascii_local_part_or_a_domain(address: str) -> None:
    with pytest.raises(ValidationError):
        normalize_email(address)


def test_a_homograph_domain_is_a_different_domain_and_shows_as_one() -> None:
    # A Cyrillic "а": someone else's domain, stored in the form that makes that plain.
    assert normalize_email("alice@exаmple.com") == "alice@xn--exmple-4nf.com"


@given(st.emails())
def test_the_stored_form_is_ascii_and_a_fixed_point(address: str) -> None:
    try:
        stored = normalize_email(address)
    except ValidationError:
        return
    assert stored.isascii() and stored == stored.lower()
    assert normalize_email(stored) == stored
    django_validate_email(stored)


def test_lookalikes_are_found_by_their_normalised_form() -> None:
    stored = [
        (1, "alice@example.com"),
        (2, "alice@exa\u200bmple.com"),  # stored before the rule
        (3, "ALICE@ＥＸＡＭＰＬＥ.COM"),
        (4, "bob@example.com"),
        (5, "user@bücher.de"),
        (6, "user@xn--bcher-kva.de"),
    ]
    groups = lookalikes(stored)
    assert set(groups) == {"alice@example.com", "user@xn--bcher-kva.de"}
    assert set(groups["alice@example.com"]) == {1, 2, 3}
    assert set(groups["user@xn--bcher-kva.de"]) == {5, 6}


# ---- signup through allauth's views ----------------------------------------------------------


def signup(address: str, client: Client | None = None) -> Any:
    return (client or Client()).post(
        reverse("account_signup"), {"email": address, "password1": PASSWORD, "password2": PASSWORD}
    )


def holders(address: str) -> set[int]:
    """Every account holding ``address`` in any spelling (the normalised comparison)."""
    pairs = [*User.objects.values_list("pk", "email")]
    pairs += [*EmailAddress.objects.values_list("user_id", "email")]
    return {pk for pk, stored in pairs if lookup_key(stored) == lookup_key(address)}


def test_signup_stores_the_normalised_form(transactional_db: None) -> None:
    response = signup("Dora@Bücher.DE")
    assert response.status_code == 302
    user = User.objects.get()
    assert user.email == "dora@xn--bcher-kva.de"
    assert EmailAddress.objects.get().email == "dora@xn--bcher-kva.de"
    assert mail.outbox[-1].to == ["dora@xn--bcher-kva.de"]


@pytest.mark.parametrize(
    "lookalike",
    [
        "alice@exa\u200bmple.com",
        "alice@example.com\u200b",
        "alice@example.com\u200e",
        "alice@exam\u00adple.com",
        "alice@ex\u2060ample.com",
        "alice@exa\ufeffmple.com",
        "alice@exa\u3164mple.com",
        "alice@exa\x85mple.com",
        "al\u200bice@example.com",
        "ａｌｉｃｅ@example.com",
    ],
    ids=ascii,
)
def test_a_lookalike_signup_is_refused_with_a_clear_error(alice: Any, lookalike: str) -> None:
    response = signup(lookalike)
    assert response.status_code == 200
    errors = response.context["form"].errors["email"]
    assert errors and all(str(e) for e in errors)
    assert User.objects.count() == 1 and EmailAddress.objects.count() == 1
    assert not [m for m in mail.outbox if lookalike in m.to]


@pytest.mark.parametrize(
    "spelling",
    [
        "ALICE@example.com",
        "alice@ＥＸＡＭＰＬＥ.com",
        "alice@Ｅxample.COM",
        " alice@example.com ",
    ],
    ids=ascii,
)
def test_another_spelling_of_an_address_is_the_same_account(alice: Any, spelling: str) -> None:
    response = signup(spelling)
    # Enumeration prevention: the same answer as a new signup, and a note to the owner.
    assert response.status_code == 302
    assert User.objects.count() == 1 and EmailAddress.objects.count() == 1
    assert all(m.to == ["alice@example.com"] for m in mail.outbox)


@pytest.mark.parametrize(
    "spelling",
    [
        "user@xn--bcher-kva.de",
        unicodedata.normalize("NFD", "user@bücher.de"),
        unicodedata.normalize("NFC", "USER@BÜCHER.DE"),
    ],
    ids=ascii,
)
def test_an_idn_address_is_one_account_in_every_form(transactional_db: None, spelling: str) -> None:
    assert signup("user@bücher.de").status_code == 302
    signup(spelling)
    assert User.objects.count() == 1
    assert User.objects.get().email == "user@xn--bcher-kva.de"


ADDRESSES = st.one_of(
    st.emails(),
    st.builds(
        "{}@{}".format,
        st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True).filter(
            lambda s: ".." not in s and not s.endswith(".")
        ),
        st.sampled_from(["bücher.de", "münchen.de", "exämple.com", "例子.中国", "example.com"]),
    ),
)
HIDDEN = st.one_of(
    st.sampled_from(INVISIBLE),
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]),
)


@given(address=ADDRESSES, hidden=HIDDEN, where=st.integers(min_value=0))
@example(address="alice@example.com", hidden="\u200b", where=9)
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_an_invisible_character_anywhere_never_makes_a_second_account(
    transactional_db: None, address: str, hidden: str, where: int
) -> None:
    try:
        canonical = normalize_email(address)
        django_validate_email(address)
    except ValidationError:
        assume(False)
    where %= len(address) + 1
    lookalike = address[:where] + hidden + address[where:]
    assume(lookalike.strip() != address.strip())  # an inserted space at an end is just a space
    with override_settings(
        ACCOUNT_RATE_LIMITS=False,  # a throttled signup would pass for a refused one
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ):
        if not User.objects.filter(email=canonical).exists():
            User.objects.create_user(email=canonical, password=PASSWORD)
        before = User.objects.count()
        response = signup(lookalike)
    assert response.status_code in (200, 302)
    event("refused" if response.status_code == 200 else "folded into the account")
    assert User.objects.count() == before
    assert holders(canonical) == {User.objects.get(email=canonical).pk}
    for stored in EmailAddress.objects.values_list("email", flat=True):
        assert stored == normalize_email(stored)


# ---- signed-in changes, login and password reset ---------------------------------------------


@pytest.mark.parametrize("lookalike", ["bob@exa\u200bmple.com", "bob@example.com\u2060"], ids=ascii)
def test_an_address_change_to_a_lookalike_is_refused(alice: Any, bob: Any, lookalike: str) -> None:
    client = reauthenticated(signed_in(alice))
    response = client.post(reverse("account_email"), {"action_add": "", "email": lookalike})
    assert response.status_code == 200 and response.context["form"].errors["email"]
    assert not EmailAddress.objects.filter(user=alice).exclude(email=alice.email).exists()
    assert not mail.outbox


def test_an_address_change_to_another_spelling_of_someones_address_is_their_address(
    alice: Any, bob: Any
) -> None:
    client = reauthenticated(signed_in(alice))
    client.post(reverse("account_email"), {"action_add": "", "email": "BOB@ＥＸＡＭＰＬＥ.com"})
    pending = EmailAddress.objects.filter(user=alice).exclude(email=alice.email)
    assert [e.email for e in pending] == ["bob@example.com"]
    # Bob's verified address: Alice's pending copy can never be verified.
    assert not pending.get().can_set_verified()
    assert all(m.to == ["bob@example.com"] for m in mail.outbox)


def test_an_address_change_stores_the_normalised_form(alice: Any) -> None:
    client = reauthenticated(signed_in(alice))
    client.post(reverse("account_email"), {"action_add": "", "email": "Alice@Bücher.de"})
    assert EmailAddress.objects.filter(user=alice, email="alice@xn--bcher-kva.de").exists()
    assert mail.outbox[-1].to == ["alice@xn--bcher-kva.de"]


@pytest.mark.parametrize(
    "spelling",
    ["ALICE@example.com", "alice@ｅｘａｍｐｌｅ.com", "alice@Ｅxample.com"],
    ids=ascii,
)
def test_login_folds_spellings_of_the_address(alice: Any, spelling: str) -> None:
    client = Client()
    response = client.post(reverse("account_login"), {"login": spelling, "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_login_with_a_lookalike_is_refused(alice: Any) -> None:
    client = Client()
    response = client.post(
        reverse("account_login"), {"login": "alice@exa\u200bmple.com", "password": PASSWORD}
    )
    assert response.status_code == 200 and response.context["form"].errors
    assert "_auth_user_id" not in client.session


def test_password_reset_mails_the_stored_address_and_throttles_every_spelling(alice: Any) -> None:
    client = Client()
    url = reverse("account_reset_password")
    spellings = ["alice@ｅxample.com", "alice@eｘample.com", "alice@exａmple.com"]
    statuses = [client.post(url, {"email": s}).status_code for s in spellings * 3]
    assert 429 in statuses  # 5 a minute per address, whatever the spelling
    assert mail.outbox and all(m.to == ["alice@example.com"] for m in mail.outbox)
    lookalike = client.post(url, {"email": "alice@exa\u200bmple.com"})
    assert lookalike.status_code == 200 and lookalike.context["form"].errors["email"]


# ---- operators: adduser, the admin, commands -------------------------------------------------


def test_adduser_stores_the_normalised_form(transactional_db: None) -> None:
    call_command("adduser", "Eve@Bücher.de", "--password", PASSWORD, stdout=io.StringIO())
    assert User.objects.get().email == "eve@xn--bcher-kva.de"
    assert EmailAddress.objects.get().email == "eve@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "lookalike", ["alice@exa\u200bmple.com", "ALICE@ｅｘａｍｐｌｅ.com"], ids=ascii
)
def test_adduser_makes_no_second_account_for_a_lookalike(alice: Any, lookalike: str) -> None:
    with pytest.raises(CommandError):
        call_command("adduser", lookalike, "--password", PASSWORD, stdout=io.StringIO())
    assert User.objects.count() == 1


def test_operator_commands_find_an_account_by_any_spelling(transactional_db: None) -> None:
    call_command("adduser", "eve@bücher.de", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "EVE@xn--bcher-kva.de", "1", stdout=io.StringIO())
    out = io.StringIO()
    call_command("balance", "eve@BÜCHER.de", stdout=out)
    assert out.getvalue().startswith("1")


def test_checkemails_reports_lookalikes_stored_before_the_rule(alice: Any) -> None:
    # As an account made before normalisation would have been stored.
    User.objects.filter(pk=alice.pk).update(email="alice@exa\u200bmple.com")
    EmailAddress.objects.filter(user=alice).update(email="alice@exa\u200bmple.com")
    call_command("adduser", "alice@example.com", "--password", PASSWORD, stdout=io.StringIO())
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("checkemails", stdout=out)
    assert "look-alikes of alice@example.com" in out.getvalue()
    assert "\\u200b" in out.getvalue()


@pytest.mark.filterwarnings("ignore::django.utils.deprecation.RemovedInDjango60Warning")
def test_every_email_field_in_the_admin_and_our_forms_normalises(operator: Any) -> None:
    request = RequestFactory().get("/admin/")
    request.user = operator
    checked = 0
    for model, model_admin in admin.site._registry.items():
        for obj in (None, model()):
            form = model_admin.get_form(request, obj)
            for name, field in form.base_fields.items():
                if isinstance(field, forms.EmailField):
                    assert isinstance(field, NormalizedEmailField), (model, name)
                    checked += 1
    assert checked >= 2  # the user's address and allauth's address list

    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in {s, *subclasses(s)}}

    autodiscover_modules("forms")
    ours = ("portal.", "billing.", "keys.", "catalog.")
    for form_class in subclasses(forms.BaseForm):
        # accounts.auth's are allauth's forms, which normalise in their clean methods (the tests
        # through allauth's views above).
        if form_class.__module__.startswith(ours) and form_class.__module__ != "accounts.auth":
            for name, field in getattr(form_class, "base_fields", {}).items():
                if isinstance(field, forms.EmailField):
                    assert isinstance(field, NormalizedEmailField), (form_class, name)


def test_the_admin_refuses_a_lookalike_and_stores_the_normalised_form(
    operator: Any, alice: Any
) -> None:
    operator_client = Client()
    operator_client.force_login(operator)
    add_user = reverse("admin:accounts_user_add")
    new = {"password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"}
    refused = operator_client.post(add_user, {**new, "email": "carol@exa\u200bmple.com"})
    assert refused.status_code == 200 and "email" in refused.context["adminform"].form.errors
    assert operator_client.post(add_user, {**new, "email": "Carol@Bücher.de"}).status_code == 302
    assert User.objects.filter(email="carol@xn--bcher-kva.de").exists()

    add_address = reverse("admin:account_emailaddress_add")
    refused = operator_client.post(
        add_address, {"user": alice.pk, "email": "alice@ex\u2060ample.org"}
    )
    assert refused.status_code == 200 and "email" in refused.context["adminform"].form.errors
    operator_client.post(add_address, {"user": alice.pk, "email": "Alice@ＥＸＡＭＰＬＥ.org"})
    assert EmailAddress.objects.filter(user=alice, email="alice@example.org").exists()


def test_is_invisible_knows_the_reported_characters() -> None:
    assert all(is_invisible(c) for c in INVISIBLE)
    assert not any(is_invisible(c) for c in "aZ09@.-_+ ü例")
