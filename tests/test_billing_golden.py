"""Golden bills: each provider's real usage shape, plain and streamed, through the real relay
process and the real worker, billed to the nano-dollar at every price type the model has.

The demo upstream answers in the provider's dialect (``x-demo-usage-shape``, or by the upstream
model's name: ``gemini*``, ``deepseek*``; the Messages endpoint always in Anthropic's) with the
counts the ``x-demo-*`` headers fix. Each expected cost is worked out by hand in the test, per
1M tokens, and written as a literal: the usage row, the ledger debit and the balance must all
show exactly that. Prompts are sent with at least as many bytes as the tokens they claim, so
every hold covers its request and nothing is capped.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from billing import ledger
from billing.models import UsageEvent
from catalog.models import Model, Provider, Route
from catalog.services import add_price_version

from .conftest import publish_catalog, wait_until
from .test_holds import image_chat

D = Decimal
# ~6,000 bytes: more than any prompt below claims in tokens (the hold bounds a text prompt by
# its size in bytes).
LONG = "Summarise the following notes. " + "note " * 1200
MESSAGES = [{"role": "user", "content": LONG}]


def _model(model_id: str, provider: Provider, upstream: str, **extra: Any) -> Model:
    model = Model.objects.create(
        id=model_id, name=model_id, provider=provider, upstream_model=upstream, **extra
    )
    Route.objects.create(model=model, provider=provider, upstream_model=upstream)
    return model


@pytest.fixture
def golden(settings: Any, demo_upstream: str, relay: Any, transactional_db: None) -> None:
    """Models with every price type their provider charges, served by the demo upstream."""
    settings.TP_DEMO_UPSTREAM_URL = demo_upstream
    shape = Provider.Shape
    openai_ = Provider.objects.create(
        slug="g-openai", name="OpenAI", api_shape=shape.OPENAI, base_url="https://x.invalid/v1"
    )
    google = Provider.objects.create(
        slug="g-google", name="Google", api_shape=shape.OPENAI, base_url="https://x.invalid/v1"
    )
    deepseek = Provider.objects.create(
        slug="g-deepseek", name="DeepSeek", api_shape=shape.OPENAI, base_url="https://x.invalid"
    )
    anthropic_ = Provider.objects.create(
        slug="g-anthropic",
        name="Anthropic",
        api_shape=shape.ANTHROPIC,
        base_url="https://x.invalid/v1",
    )
    add_price_version(
        model=_model("g-gpt-audio", openai_, "gpt-4o-audio-preview"),
        input=D("2.5"),
        output=D(10),
        cached_input=D("1.25"),
        reasoning=D(12),
        input_audio=D(40),
        output_audio=D(80),
    )
    add_price_version(
        model=_model("g-gemini", google, "gemini-2.5-pro"),
        input=D("1.25"),
        output=D(10),
        cached_input=D("0.31"),
        # Above 2,000 prompt tokens (Google's line is at 200k; lower here so a test prompt
        # crosses it), dearer prices for the whole request.
        tiers=[{"above": 2000, "input": "2.5", "output": "15", "cached_input": "0.625"}],
    )
    add_price_version(
        model=_model("g-deepseek", deepseek, "deepseek-reasoner"),
        input=D("0.56"),
        output=D("1.68"),
        cached_input=D("0.07"),
    )
    add_price_version(
        model=_model("g-claude", anthropic_, "claude-sonnet-4-6"),
        input=D(3),
        output=D(15),
        cached_input=D("0.3"),
        cache_write=D("3.75"),
        cache_write_1h=D(6),
    )
    add_price_version(
        model=_model("g-vision", openai_, "gpt-4.1-mini", context_window=50_000, vision=True),
        input=D(2),
        output=D(8),
        request=D("0.002"),
        image=D("0.001"),
    )
    add_price_version(model=_model("g-free", openai_, "demo-chat"), input=D(0), output=D(0))
    _model("g-unpriced", openai_, "demo-chat")  # listed and routed, but no price
    publish_catalog(relay)


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


@pytest.fixture
def claude(alice_key: str, relay: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=relay.base_url.removesuffix("/v1"), api_key=alice_key, max_retries=0
    )


@pytest.fixture
def billed(alice: Any, worker: Any) -> Iterator[Any]:
    """Checks one request's bill: its usage row at exactly ``expected``, and the ledger's
    debit for it (requests go one at a time, so each batch is one request) and the balance
    down by as much."""
    before = [ledger.balance(alice.account)]

    def check(request_id: str, expected: Decimal, streamed: bool) -> UsageEvent:
        event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
        assert (event.cost, event.unbilled, event.streamed) == (expected, 0, streamed)
        assert not event.estimated
        if expected:
            assert event.ledger_entry is not None and event.ledger_entry.amount == -expected
        assert ledger.balance(alice.account) == before[0] - expected
        before[0] -= expected
        return event

    yield check


def chat(client: openai.OpenAI, model: str, stream: bool, **headers: str) -> str:
    """An OpenAI chat request through the relay; returns its request id."""
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=stream, extra_headers=headers, **extra
    )
    parsed = raw.parse()
    if stream:
        chunks = list(parsed)
        assert chunks[-1].usage is not None
    return raw.headers["x-request-id"]


pytestmark = pytest.mark.usefixtures("golden")


def test_openai_cached_reasoning_and_audio_tokens(client: openai.OpenAI, billed: Any) -> None:
    for stream in (False, True):  # plain, then streamed
        request_id = chat(
            client,
            "g-gpt-audio",
            stream,
            **{
                "x-demo-prompt-tokens": "3000",
                "x-demo-cached-tokens": "1000",
                "x-demo-input-audio-tokens": "500",
                "x-demo-completion-tokens": "100",
                "x-demo-reasoning-tokens": "200",
                "x-demo-output-audio-tokens": "50",
            },
        )
        # 1,500 text × 2.5 + 1,000 cached × 1.25 + 500 audio × 40
        # + 100 text × 10 + 200 reasoning × 12 + 50 audio × 80 = 32,400 per 1M
        event = billed(request_id, D("0.032400000"), stream)
        assert (event.prompt_tokens, event.cached_tokens, event.input_audio_tokens) == (
            3000,
            1000,
            500,
        )
        assert (event.completion_tokens, event.reasoning_tokens, event.output_audio_tokens) == (
            350,
            200,
            50,
        )


def test_deepseek_cache_hits_and_misses(client: openai.OpenAI, billed: Any) -> None:
    for stream in (False, True):  # plain, then streamed
        request_id = chat(
            client,
            "g-deepseek",
            stream,
            **{
                "x-demo-prompt-tokens": "3000",
                "x-demo-cached-tokens": "2000",
                "x-demo-completion-tokens": "100",
                "x-demo-reasoning-tokens": "400",
            },
        )
        # 1,000 misses × 0.56 + 2,000 hits × 0.07 + 500 out (400 of them reasoning) × 1.68
        event = billed(request_id, D("0.001540000"), stream)
        assert (event.cached_tokens, event.completion_tokens, event.reasoning_tokens) == (
            2000,
            500,
            400,
        )


def test_gemini_thoughts_left_out_of_completion_tokens_are_billed(
    client: openai.OpenAI, billed: Any
) -> None:
    for stream in (False, True):  # plain, then streamed
        request_id = chat(
            client,
            "g-gemini",
            stream,
            **{
                "x-demo-prompt-tokens": "1500",
                "x-demo-completion-tokens": "100",
                "x-demo-reasoning-tokens": "300",
            },
        )
        # Gemini says completion_tokens 100, total_tokens 1,900: 300 thought tokens besides.
        # 1,500 × 1.25 + 400 × 10
        event = billed(request_id, D("0.005875000"), stream)
        assert (event.completion_tokens, event.reasoning_tokens) == (400, 300)


def test_a_prompt_above_a_tier_pays_the_tiers_prices_for_the_whole_request(
    client: openai.OpenAI, billed: Any
) -> None:
    for stream in (False, True):  # plain, then streamed
        request_id = chat(
            client,
            "g-gemini",
            stream,
            **{
                "x-demo-prompt-tokens": "3000",
                "x-demo-cached-tokens": "1000",
                "x-demo-completion-tokens": "100",
                "x-demo-reasoning-tokens": "300",
                "x-demo-usage-shape": "openai",
            },
        )
        # Above 2,000 prompt tokens: 2,000 × 2.5 + 1,000 cached × 0.625 + 400 × 15
        billed(request_id, D("0.011625000"), stream)


ANTHROPIC_COUNTS = {
    "x-demo-prompt-tokens": "5000",
    "x-demo-cached-tokens": "2000",
    "x-demo-cache-creation-tokens": "1000",
    "x-demo-cache-creation-1h-tokens": "1500",
    "x-demo-completion-tokens": "200",
    "x-demo-reasoning-tokens": "100",
}
# 500 input × 3 + 2,000 read × 0.3 + 1,000 written for 5 minutes × 3.75
# + 1,500 written for an hour × 6 + 300 out (100 of them thinking) × 15 = 19,350 per 1M
ANTHROPIC_COST = D("0.019350000")


def test_anthropic_cache_reads_and_5m_and_1h_writes_for_a_messages_client(
    claude: anthropic.Anthropic, billed: Any
) -> None:
    for stream in (False, True):  # plain, then streamed
        args: dict[str, Any] = {
            "model": "g-claude",
            "max_tokens": 1000,
            "messages": MESSAGES,
            "extra_headers": ANTHROPIC_COUNTS,
        }
        if stream:
            with claude.messages.stream(**args) as events:
                final = events.get_final_message()
                request_id = events.response.headers["x-request-id"]
        else:
            raw = claude.messages.with_raw_response.create(**args)
            final = raw.parse()
            request_id = raw.headers["x-request-id"]
        # Passed through as Anthropic sent it.
        assert final.usage.cache_creation is not None
        assert final.usage.cache_creation.ephemeral_1h_input_tokens == 1500
        assert (final.usage.input_tokens, final.usage.output_tokens) == (500, 300)
        event = billed(request_id, ANTHROPIC_COST, stream)
        assert (
            event.prompt_tokens,
            event.cached_tokens,
            event.cache_write_tokens,
            event.cache_write_1h_tokens,
        ) == (5000, 2000, 1000, 1500)


def test_anthropic_cache_writes_for_an_openai_client(client: openai.OpenAI, billed: Any) -> None:
    for stream in (False, True):  # plain, then streamed
        request_id = chat(client, "g-claude", stream, **ANTHROPIC_COUNTS)
        event = billed(request_id, ANTHROPIC_COST, stream)
        assert (event.cache_write_tokens, event.cache_write_1h_tokens) == (1000, 1500)


def test_a_per_request_fee_and_a_per_image_price(client: openai.OpenAI, billed: Any) -> None:
    for stream in (False, True):  # plain, then streamed
        body = image_chat("g-vision")
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        raw = client.chat.completions.with_raw_response.create(
            model="g-vision",
            messages=body["messages"],
            stream=stream,
            extra_headers={"x-demo-prompt-tokens": "1000", "x-demo-completion-tokens": "50"},
            **extra,
        )
        if stream:
            list(raw.parse())
        # 1,000 × 2 + 50 × 8 = 2,400 per 1M; + $0.002 for the request + $0.001 for the image
        event = billed(raw.headers["x-request-id"], D("0.005400000"), stream)
        assert event.images == 1


def test_a_model_without_a_price_is_refused_and_a_zero_price_is_a_price(
    client: openai.OpenAI, billed: Any, alice: Any
) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="g-unpriced", messages=MESSAGES)
    assert refused.value.code == "model_not_found"
    assert not UsageEvent.objects.filter(model_id="g-unpriced").exists()
    # Free, and said so by its price: served, and recorded at $0.
    event = billed(chat(client, "g-free", False), D(0), False)
    assert event.price_version == 1 and event.ledger_entry is None
