"""One stored form for every email address a person or an operator enters.

An address that looks the same must be the same account: ``alice@example.com`` with a zero-width
space in it used to sign up as a second account whose mail (the domain folded by IDNA on the
way out) reached the real Alice. So every entered address goes through ``normalize_email``,
which refuses invisible and control characters outright and folds everything else that mail
treats as equal (case, Unicode normal forms, fullwidth dots and letters in the domain, the
Unicode and the ``xn--`` spelling of a domain) into one canonical string:

    the local part in lower case, ``@``, the domain as lower-case IDNA A-labels (ASCII).

So ``user@Bücher.de``, the same typed with a combining diaeresis (NFD) and
``user@xn--bcher-kva.de`` are all stored as ``user@xn--bcher-kva.de``. The canonical form is
pure ASCII and is exactly the address mail is sent to, so a stored string names one mailbox,
and a homograph domain (a Cyrillic "а" in "exаmple.com") shows as the ``xn--`` label it is
wherever operators read addresses. Local parts are ASCII only: Django's email validation
accepts nothing else before the ``@``, and most mail servers do not speak SMTPUTF8.

Addresses stored before this rule can be checked with ``manage.py checkemails``
(``lookalikes`` below), which groups them by the same normalisation.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from email_validator import EmailNotValidError, validate_email

# Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt): characters that
# render as nothing. IDNA would silently drop some of them (U+3164, U+034F) from a domain, so
# they are refused by name rather than folded where nobody can see them.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Controls, formatting characters, separators (spaces of every width), private use,
# surrogates and unassigned code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cs", "Cn"})


def is_invisible(char: str) -> bool:
    """True for a character that shows as nothing, or as a space other than the ASCII one (which
    no reader mistakes for part of an address), in an address."""
    code = ord(char)
    if char == " ":
        return False
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or any(
        low <= code <= high for low, high in _DEFAULT_IGNORABLE
    )


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".strip()


def normalize_email(value: str) -> str:
    """The canonical form of an entered address (see the module's docstring), or a
    ValidationError whose message says what to change."""
    value = (value or "").strip()
    hidden = [char for char in value if is_invisible(char)]
    if hidden:
        raise ValidationError(
            _(
                "The email address contains an invisible or control character (%(character)s). "
                "Type the address again without it."
            ),
            code="invisible",
            params={"character": _describe(hidden[0])},
        )
    local, at, _domain = value.rpartition("@")
    if at and not local.isascii():
        raise ValidationError(
            _(
                "Use only letters a to z, digits and the usual punctuation before the @ sign "
                "of the email address."
            ),
            code="non_ascii",
        )
    try:
        parsed = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValidationError(_("Enter a valid email address."), code="invalid") from exc
    # allow_smtputf8=False guarantees the ASCII form exists.
    return f"{parsed.local_part.lower()}@{parsed.ascii_domain.lower()}"


class NormalizedEmailField(forms.EmailField):
    """A form's email field that cleans to ``normalize_email``'s canonical form."""

    def to_python(self, value: object) -> str | None:
        text = super().to_python(value)
        if not text:
            return text
        return normalize_email(text)


def lookup_key(value: str) -> str:
    """What ``value`` would have been stored as had it gone through ``normalize_email``,
    also for addresses it refuses: invisible characters dropped and compatibility forms
    folded, so that a look-alike stored before the rule lands beside the address it mimics."""
    visible = "".join(char for char in value if not is_invisible(char))
    try:
        return normalize_email(visible)
    except ValidationError:
        return unicodedata.normalize("NFKC", visible).strip().lower()


def lookalikes(addresses: Iterable[tuple[int, str]]) -> dict[str, dict[int, set[str]]]:
    """From (user id, stored address) pairs, the canonical addresses that more than one user
    holds, each with every user's stored spellings: the accounts an operator should merge or
    close. Compares normalised forms in Python, as no SQL collation knows IDNA."""
    holders: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for user_id, address in addresses:
        holders[lookup_key(address)][user_id].add(address)
    return {
        key: {user_id: spellings for user_id, spellings in users.items()}
        for key, users in holders.items()
        if len(users) > 1
    }
