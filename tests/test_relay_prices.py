"""The relay's integer prices (relay/prices.py) agree exactly with core.pricing.cost."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from core.pricing import Price, cost, to_nanos
from relay.prices import NanoPrice, amount, of_model


def _random_price(rng: random.Random) -> Price:
    def one() -> Decimal:
        places = rng.choice([0, 1, 2, 3, 3, 3, 4, 6, 9])
        return Decimal(rng.randrange(0, 200_000 * 10**places)).scaleb(-places)

    return Price(version=rng.randrange(1, 100), input=one(), output=one(), cached_input=one())


def _random_tokens(rng: random.Random) -> int:
    return rng.choice(
        [0, 1, rng.randrange(0, 100), rng.randrange(0, 10**6), rng.randrange(0, 10**9)]
    )


def test_integer_prices_agree_with_the_cost_function_exactly() -> None:
    rng = random.Random(20240611)
    for _ in range(400):
        price = _random_price(rng)
        nano = NanoPrice(price)
        for _ in range(50):
            prompt, completion, cached = (_random_tokens(rng) for _ in range(3))
            expected = cost(
                price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
            )
            got = nano.nanos(
                prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
            )
            assert got == to_nanos(expected), (price, prompt, completion, cached)
            assert str(amount(got)) == str(expected)


def test_catalog_prices_and_rounding_up() -> None:
    model = {"price": {"version": 3, "input": "0.15", "output": "0.6"}}
    nano = of_model(model)
    assert of_model(model) is nano
    assert nano.price.version == 3
    assert nano.nanos(prompt_tokens=1000, completion_tokens=10, cached_tokens=400) == 156_000
    odd = NanoPrice(
        Price(version=1, input=Decimal("0.0001"), output=Decimal(0), cached_input=Decimal(0))
    )
    assert odd.nanos(prompt_tokens=1, completion_tokens=0) == 1  # 0.1 nano rounds up
    assert str(amount(0)) == str(cost(odd.price, prompt_tokens=0, completion_tokens=0))
    with pytest.raises(ValueError):
        nano.nanos(prompt_tokens=-1, completion_tokens=0)
