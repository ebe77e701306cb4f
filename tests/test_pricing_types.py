"""Every price type (core.pricing): the fallbacks, the parts of a prompt and of an output,
the per-request fee, long-context tiers; and the relay's integer twin (relay.prices) agreeing
with it to the nano-dollar over all of them, its worst case never below a real cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.models import PriceVersion
from core.pricing import Price, Tier, cost, to_nanos
from relay.prices import NanoPrice

D = Decimal

# Claude Sonnet's prices: 5-minute writes at 1.25x input, 1-hour at 2x, reads at 0.1x; above
# 200k prompt tokens every price is higher.
SONNET = Price(
    version=1,
    input=D(3),
    output=D(15),
    cached_input=D("0.3"),
    cache_write=D("3.75"),
    cache_write_1h=D(6),
    tiers=(
        Tier(
            above=200_000,
            input=D(6),
            output=D("22.5"),
            cached_input=D("0.6"),
            cache_write=D("7.5"),
            cache_write_1h=D(12),
        ),
    ),
)


def test_it_bills_each_part_of_the_prompt_at_its_own_price() -> None:
    # 10,000 prompt tokens: 6,000 read from the cache, 1,000 written for 5 minutes, 2,000 for
    # an hour, 1,000 plain; 500 out.
    got = cost(
        SONNET,
        prompt_tokens=10_000,
        completion_tokens=500,
        cached_tokens=6_000,
        cache_write_tokens=1_000,
        cache_write_1h_tokens=2_000,
    )
    # 1000×3 + 6000×0.3 + 1000×3.75 + 2000×6 + 500×15 = 28,050 per 1M
    assert got == D("0.028050000")


def test_the_empty_prices_fall_back_as_the_catalog_says() -> None:
    plain = Price(version=1, input=D(2), output=D(8))
    args = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "cached_tokens": 100,
        "cache_write_tokens": 100,
        "cache_write_1h_tokens": 100,
        "reasoning_tokens": 50,
        "input_audio_tokens": 100,
        "output_audio_tokens": 20,
    }
    # Everything at input or output price: as if there were no parts at all.
    assert cost(plain, **args) == cost(plain, prompt_tokens=1000, completion_tokens=100)
    # A 1-hour write falls back to the 5-minute write's price, not to the input's.
    writes = Price(version=1, input=D(2), output=D(8), cache_write=D("2.5"))
    assert cost(writes, prompt_tokens=100, completion_tokens=0, cache_write_1h_tokens=100) == D(
        "0.000250000"
    )


def test_reasoning_and_audio_are_parts_of_the_output() -> None:
    price = Price(
        version=1,
        input=D("2.5"),
        output=D(10),
        input_audio=D(40),
        output_audio=D(80),
        reasoning=D(12),
    )
    got = cost(
        price,
        prompt_tokens=1_000,
        completion_tokens=700,
        input_audio_tokens=400,
        reasoning_tokens=300,
        output_audio_tokens=200,
    )
    # 600×2.5 + 400×40 + 200×10 + 300×12 + 200×80 = 39,100 per 1M
    assert got == D("0.039100000")


def test_parts_never_exceed_their_whole() -> None:
    price = Price(version=1, input=D(1), output=D(2), cached_input=D(0), cache_write=D(5))
    # 100 cached of a 60-token prompt: the whole prompt is cached, nothing is written.
    assert cost(
        price, prompt_tokens=60, completion_tokens=0, cached_tokens=100, cache_write_tokens=50
    ) == D(0)
    with pytest.raises(ValueError):
        cost(price, prompt_tokens=1, completion_tokens=0, reasoning_tokens=-1)


def test_the_per_request_fee_is_charged_once_per_request() -> None:
    price = Price(version=1, input=D(1), output=D(1), request=D("0.005"))
    assert cost(price, prompt_tokens=0, completion_tokens=0) == D("0.005000000")
    assert cost(price, prompt_tokens=1000, completion_tokens=0) == D("0.006000000")
    assert cost(price, prompt_tokens=0, completion_tokens=0, requests=0) == D(0)


def test_a_tier_prices_the_whole_request_above_its_prompt_size() -> None:
    at = cost(SONNET, prompt_tokens=200_000, completion_tokens=1000)
    above = cost(SONNET, prompt_tokens=200_001, completion_tokens=1000)
    assert at == D("0.615000000")  # 200,000×3 + 1000×15
    assert above == D("1.222506000")  # 200,001×6 + 1000×22.5: the whole prompt, not the rest
    # The highest tier the prompt is above wins; a tier names only what it changes, the
    # rest falling back within the tier (cache writes follow the tier's input).
    stepped = Price(
        version=1,
        input=D(1),
        output=D(2),
        tiers=(Tier(above=1000, input=D(3)), Tier(above=100, input=D(2), output=D(4))),
    )
    assert stepped.tiers[0].above == 100  # kept in order
    assert cost(stepped, prompt_tokens=1001, completion_tokens=1) == D("0.003005000")
    assert cost(stepped, prompt_tokens=500, completion_tokens=1, cache_write_tokens=500) == D(
        "0.001004000"
    )


def test_every_field_round_trips_through_the_dict() -> None:
    full = Price(
        version=7,
        input=D("1.5"),
        output=D(6),
        cached_input=D("0.15"),
        image=D("0.001"),
        audio_second=D("0.0001"),
        cache_write=D("1.875"),
        cache_write_1h=D(3),
        reasoning=D(7),
        input_audio=D(10),
        output_audio=D(20),
        request=D("0.01"),
        tiers=(Tier(above=128_000, input=D(3), output=D(12)),),
    )
    assert Price.from_dict(full.as_dict()) == full
    plain = Price(version=1, input=D(1), output=D(2))
    assert plain.as_dict()["cache_write"] is None
    assert Price.from_dict(plain.as_dict()) == plain
    # A price without the newer keys (a catalog published before them) still reads.
    assert Price.from_dict({"version": 1, "input": "1", "output": "2"}) == plain


# ---- the relay's integer prices --------------------------------------------------------------

per_token = st.decimals(0, 200, places=6)
maybe = st.none() | per_token
tiers = st.lists(
    st.builds(
        Tier,
        above=st.integers(0, 10**6),
        input=maybe,
        output=maybe,
        cached_input=maybe,
        cache_write=maybe,
        cache_write_1h=maybe,
        reasoning=maybe,
        input_audio=maybe,
        output_audio=maybe,
    ),
    max_size=3,
).map(tuple)
prices = st.builds(
    Price,
    version=st.just(1),
    input=per_token,
    output=per_token,
    cached_input=maybe,
    image=st.decimals(0, 1, places=9),
    audio_second=st.decimals(0, 1, places=6),
    cache_write=maybe,
    cache_write_1h=maybe,
    reasoning=maybe,
    input_audio=maybe,
    output_audio=maybe,
    request=st.decimals(0, 1, places=9),
    tiers=tiers,
)
tokens = st.integers(0, 2 * 10**6) | st.integers(0, 10**9)
usages = st.fixed_dictionaries(
    {
        "prompt_tokens": tokens,
        "completion_tokens": tokens,
        "cached_tokens": tokens,
        "cache_write_tokens": tokens,
        "cache_write_1h_tokens": tokens,
        "reasoning_tokens": tokens,
        "input_audio_tokens": tokens,
        "output_audio_tokens": tokens,
        "images": st.integers(0, 1000),
        "audio_ms": st.integers(0, 10**8),
        "requests": st.integers(0, 1),
    }
)


@given(prices, usages)
@settings(max_examples=400, deadline=None)
def test_integer_prices_agree_with_the_cost_function_for_every_price_type(
    price: Price, usage: dict[str, int]
) -> None:
    assert NanoPrice(price).nanos(**usage) == to_nanos(cost(price, **usage))


@given(prices, usages, st.integers(0, 3 * 10**6), st.integers(0, 10**6))
@settings(max_examples=300, deadline=None)
def test_the_worst_case_is_never_below_what_a_request_within_it_costs(
    price: Price, usage: dict[str, int], prompt_bound: int, completion_bound: int
) -> None:
    within = {
        **usage,
        "prompt_tokens": min(usage["prompt_tokens"], prompt_bound),
        "completion_tokens": min(usage["completion_tokens"], completion_bound),
        "requests": 1,
    }
    nano = NanoPrice(price)
    most = nano.most(
        prompt_tokens=prompt_bound,
        completion_tokens=completion_bound,
        images=within["images"],
        audio_ms=within["audio_ms"],
    )
    assert nano.nanos(**within) <= most


def test_a_price_versions_tiers_are_checked_before_they_can_be_published() -> None:
    def clean(tiers: object) -> None:
        PriceVersion(input=D(1), output=D(2), tiers=tiers).clean()

    clean([{"above": 200_000, "input": "6", "output": "22.5"}])
    clean([])
    for bad in (
        [{"input": "6"}],
        [{"above": 10, "input": "six"}],
        [{"above": 10, "input": "-1"}],
        [{"above": -1}],
        {"above": 10},
        ["200000"],
    ):
        with pytest.raises(ValidationError):
            clean(bad)
