from decimal import Decimal

import pytest

from core.pricing import Price, cost, from_nanos, to_nanos

LARGE = Price(
    version=1, input=Decimal("2.00"), output=Decimal("6.00"), cached_input=Decimal("2.00")
)


def test_it_charges_tokens_times_price_exactly() -> None:
    assert cost(LARGE, prompt_tokens=1234, completion_tokens=567) == Decimal("0.005870000")


def test_it_charges_cached_tokens_at_the_cached_price() -> None:
    price = Price(
        version=3, input=Decimal("2.50"), output=Decimal("10"), cached_input=Decimal("1.25")
    )
    # 1000 prompt tokens of which 400 cached, 100 out.
    expected = (600 * Decimal("2.50") + 400 * Decimal("1.25") + 100 * Decimal(10)) / 1_000_000
    assert cost(price, prompt_tokens=1000, completion_tokens=100, cached_tokens=400) == expected


def test_it_rounds_up_once_to_the_nano_dollar() -> None:
    odd = Price(version=1, input=Decimal("0.0001"), output=Decimal(0), cached_input=Decimal(0))
    assert cost(odd, prompt_tokens=1, completion_tokens=0) == Decimal("0.000000001")


def test_it_refuses_negative_counts() -> None:
    with pytest.raises(ValueError):
        cost(LARGE, prompt_tokens=-1, completion_tokens=0)


def test_nanos_round_trip_is_exact() -> None:
    amount = Decimal("1234.567891234")
    assert to_nanos(amount) == 1234567891234
    assert from_nanos(to_nanos(amount)) == amount


def test_price_round_trips_through_its_dict() -> None:
    assert Price.from_dict(LARGE.as_dict()) == LARGE
