"""Money in the database and on the page. Amounts are exact decimals (USD), never floats."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import formats
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy as _

# Every amount column: nine places, the nano-dollar the cost function rounds to.
MONEY: dict[str, Any] = {"max_digits": 20, "decimal_places": 9}


def usd(value: Any) -> str:
    """An exact amount: at least two decimals, more only where they are not zero (no float
    round trip, so $0.000012345 shows as it is charged)."""
    if value is None or value == "":
        return ""
    amount = Decimal(str(value))
    text = format(amount.normalize(), "f") if amount != 0 else "0"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def usd_text(value: Any) -> str:
    """``usd`` for a reader: the same exact digits in the active language's number format
    (``1,234.50`` in English, ``1 234,50`` in French), formatted from the Decimal itself. Only
    for text people read; inputs, exports and the API take ``usd``."""
    plain = usd(value)
    if not plain:
        return ""
    places = len(plain.partition(".")[2])
    return formats.number_format(Decimal(plain), decimal_pos=places, use_l10n=True)


def text_formatter() -> Callable[[Any], str]:
    """``usd_text`` (for Decimals) and humanize's ``intcomma`` (for ints) for a page with
    thousands of figures: the active language's separators are read once, not per figure, and
    the digits are grouped by threes (as in every language the portal ships)."""
    decimal_sep = str(formats.get_format("DECIMAL_SEPARATOR"))
    thousands = str(formats.get_format("THOUSAND_SEPARATOR"))

    def grouped(whole: str) -> str:
        sign = "-" if whole.startswith("-") else ""
        digits = whole.lstrip("-")
        return sign + f"{int(digits):,}".replace(",", thousands)

    def text(value: Any) -> str:
        if isinstance(value, int):
            return grouped(str(value))
        plain = usd(value)
        if not plain:
            return ""
        whole, _, frac = plain.partition(".")
        return grouped(whole) + decimal_sep + frac

    return text


@deconstructible
class MaxPlaces:
    """At most ``places`` decimals, trailing zeros aside (a price the cost function applies
    without rounding: 3 per 1M tokens, 9 per image, 6 per second of audio)."""

    def __init__(self, places: int) -> None:
        self.places = places

    def __call__(self, value: Decimal | None) -> None:
        if value is None:
            return
        exponent = value.normalize().as_tuple().exponent
        if not isinstance(exponent, int) or exponent < -self.places:
            raise ValidationError(
                _("At most %(places)d decimal places."), params={"places": self.places}
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaxPlaces) and other.places == self.places

    def __hash__(self) -> int:
        return hash(self.places)
