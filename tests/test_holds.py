"""A hold bounds everything a request can cost: images, audio and files billed on their
content, tool prompts, and upstreams that report more than a request could use. No balance or
spend cap goes below zero, whatever the upstream says."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import wave
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from django.core.management import call_command
from django.db.models import Sum
from hypothesis import given, settings
from hypothesis import strategies as st

from billing import ledger
from billing.models import UsageEvent
from catalog.models import Model, PriceVersion
from core.pricing import Price, cost, to_nanos
from keys.models import ApiKey
from keys.services import issue_key
from keys.sync import push
from relay import media
from relay.app import Relay
from relay.errors import RelayError
from relay.prices import NanoPrice
from relay.request import Request

from .conftest import credit, publish_catalog, run_apart, wait_until

PNG = "data:image/png;base64,iVBORw0KGgo="


def image_chat(model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    return {"model": model, "messages": [{"role": "user", "content": parts}], **extra}


def wav(seconds: float, rate: int = 16000) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(rate * seconds))
    return base64.b64encode(buffer.getvalue()).decode()


def mp3(frames: int) -> str:
    """MPEG-1 layer III frames at 128 kbit/s, 44.1 kHz: 1,152 samples (26.1 ms) each."""
    header = struct.pack(">I", 0xFFFB9064)
    frame = header + b"\0" * (144 * 128000 // 44100 - 4)
    return base64.b64encode(b"ID3\x03\0\0\0\0\0\0" + frame * frames).decode()


# ---- the pure parts: prices, media, the worst case ---------------------------------------------


def test_it_charges_images_and_audio_seconds_at_their_own_prices() -> None:
    price = Price(
        version=1,
        input=Decimal(2),
        output=Decimal(6),
        cached_input=Decimal(1),
        image=Decimal("0.001238"),
        audio_second=Decimal("0.0001"),
    )
    expected = Decimal(1000 * 2 + 10 * 6) / 1_000_000 + 3 * Decimal("0.001238") + Decimal("0.00015")
    assert (
        cost(price, prompt_tokens=1000, completion_tokens=10, images=3, audio_ms=1500) == expected
    )
    assert NanoPrice(price).nanos(
        prompt_tokens=1000, completion_tokens=10, images=3, audio_ms=1500
    ) == to_nanos(expected)


prices_ = st.builds(
    Price,
    version=st.just(1),
    input=st.decimals(0, 200, places=3),
    output=st.decimals(0, 200, places=3),
    cached_input=st.decimals(0, 200, places=3),
    image=st.decimals(0, 1, places=9),
    audio_second=st.decimals(0, 1, places=6),
)
counts = st.integers(0, 10**9)


@given(prices_, counts, counts, counts, st.integers(0, 1000), st.integers(0, 10**8))
@settings(max_examples=300, deadline=None)
def test_the_relays_integer_prices_agree_with_the_cost_function(
    price: Price, prompt: int, completion: int, cached: int, images: int, audio: int
) -> None:
    args = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "images": images,
        "audio_ms": audio,
    }
    assert NanoPrice(price).nanos(**args) == to_nanos(cost(price, **args))


def test_it_counts_images_and_measures_audio() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "input_audio", "input_audio": {"data": wav(1.5), "format": "wav"}},
                    {"type": "input_audio", "input_audio": {"data": mp3(100), "format": "mp3"}},
                ],
            },
        ]
    }
    found = media.inspect(body, "chat", measure_audio=True)
    assert found.images == 2 and found.other
    assert found.audio_ms == 1500 + 2613  # 100 × 1152 / 44100 s = 2.6122 s, rounded up
    # Audio is measured only where it is priced; it still makes the prompt unbounded by bytes.
    assert media.inspect(body, "chat", measure_audio=False).audio_ms == 0


def test_anthropic_images_count_inside_tool_results_and_documents_are_media() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [image, image]},
                    {"type": "text", "text": "and this"},
                ],
            }
        ]
    }
    assert media.inspect(body, "messages", measure_audio=False).images == 2
    document = {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}
    found = media.inspect(
        {"messages": [{"role": "user", "content": [document]}]}, "messages", measure_audio=False
    )
    assert found.other and found.images == 0
    text_only = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert not media.inspect(text_only, "messages", measure_audio=True).other


@pytest.mark.parametrize(
    "audio",
    [
        {"data": "not base64!", "format": "wav"},
        {"data": base64.b64encode(b"RIFF....WAVEjunk").decode(), "format": "wav"},
        {"data": base64.b64encode(b"\0" * 500).decode(), "format": "mp3"},
        {"data": wav(1), "format": "flac"},
        {"format": "wav"},
    ],
)
def test_unreadable_audio_for_a_model_priced_by_the_second_is_a_clear_400(audio: Any) -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}]
    }
    with pytest.raises(RelayError) as caught:
        media.inspect(body, "chat", measure_audio=True)
    assert caught.value.status == 400


@given(st.binary(max_size=4000), st.sampled_from(["wav", "mp3"]))
@settings(max_examples=300, deadline=None)
def test_no_audio_bytes_crash_the_measurement(data: bytes, fmt: str) -> None:
    try:
        assert media.audio_ms(base64.b64encode(data).decode(), fmt) >= 0
    except RelayError as error:
        assert error.status == 400


def worst(model: dict[str, Any], body: dict[str, Any], api: str = "chat") -> tuple[int, Request]:
    from relay import prices

    req = Request()
    req.model = model
    req.body = body
    req.price = prices.of_model(model)
    raw = json.dumps(body).encode()
    return Relay().worst_case(req, len(raw), api), req


MODEL = {
    "id": "m",
    "context_window": 100_000,
    "max_output_tokens": 1000,
    "price": {"version": 1, "input": "2", "output": "6", "cached_input": "1", "image": "0.01"},
}


def test_a_text_request_holds_its_bytes_and_a_media_request_the_context_window() -> None:
    text = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 10}
    nanos, _ = worst(MODEL, text)
    size = len(json.dumps(text).encode())
    assert nanos == (size * 2 + 10 * 6) * 1000
    with_image = image_chat("m", max_tokens=10)
    nanos, req = worst(MODEL, with_image)
    assert req.media.images == 1
    # The whole context window, the image at its price, the output.
    assert nanos == (100_000 * 2 + 10 * 6) * 1000 + 10_000_000
    with_tools = {**text, "tools": [{"type": "function", "function": {"name": "f"}}]}
    nanos, _ = worst(MODEL, with_tools)
    assert nanos == ((len(json.dumps(with_tools).encode()) + 1024) * 2 + 10 * 6) * 1000


# ---- through the relay: usage above the hold, and the overspend race -----------------------------


def burst(url: str, secret: str, body: dict[str, Any], count: int, **headers: str) -> list[int]:
    async def run() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.post(
                    url,
                    data=json.dumps(body),
                    headers={"Authorization": f"Bearer {secret}", **headers},
                ) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*(one() for _ in range(count))))

    return run_apart(run)


def hold_of(body: dict[str, Any], model_id: str) -> Decimal:
    from catalog.sync import snapshot

    nanos, _ = worst(snapshot()["models"][model_id], body)
    return Decimal(nanos) / 1_000_000_000


@pytest.mark.usefixtures("catalog")
def test_usage_reported_above_the_hold_is_charged_at_the_hold_and_recorded(
    relay: Any, make_user: Any, worker: Any
) -> None:
    user = make_user("ursula@example.com")
    credit(user, 5)
    _, secret = issue_key(account=user.account, name="laptop")
    body = {
        "model": "mistral-small",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 20,
    }
    statuses = burst(
        f"{relay.base_url}/chat/completions",
        secret,
        body,
        1,
        **{"x-demo-prompt-tokens": "900000000", "x-demo-completion-tokens": "20"},
    )
    assert statuses == [200]
    event = wait_until(lambda: UsageEvent.objects.filter(account=user.account).first())
    held = hold_of(body, "mistral-small")
    assert event.prompt_tokens == 900_000_000  # what the upstream said, kept as it said it
    assert event.cost == held
    assert (
        event.unbilled
        == cost(
            PriceVersion.objects.get(
                model_id="mistral-small", version=event.price_version
            ).as_price(),
            prompt_tokens=900_000_000,
            completion_tokens=20,
        )
        - held
    )
    assert ledger.balance(user.account) == Decimal(5) - held
    call_command("reconcile", stdout=io.StringIO())


@pytest.mark.usefixtures("catalog")
def test_image_requests_reporting_huge_usage_race_without_overspending(
    relay: Any, make_user: Any, worker: Any
) -> None:
    user = make_user("irene@example.com")
    body = image_chat(max_tokens=16)
    held = hold_of(body, "gpt-4o")
    # The balance pays for exactly three such requests; the key's cap for two.
    credit(user, held * 3)
    key, secret = issue_key(account=user.account, name="capped")
    ApiKey.objects.filter(pk=key.pk).update(spend_cap=held * 2, spend_cap_period="day")
    key.refresh_from_db()
    push(key)
    _, uncapped = issue_key(account=user.account, name="uncapped")

    headers = {
        "x-demo-latency-ms": "300",
        "x-demo-prompt-tokens": "5000000",  # far above the context window
        "x-demo-completion-tokens": "16",
    }
    url = f"{relay.base_url}/chat/completions"
    capped = burst(url, secret, body, 20, **headers)
    assert capped.count(200) == 2, capped
    assert set(capped) <= {200, 402}
    rest = burst(url, uncapped, body, 20, **headers)
    assert rest.count(200) == 1, rest

    wait_until(lambda: UsageEvent.objects.filter(account=user.account).count() == 3, timeout=20)
    events = UsageEvent.objects.filter(account=user.account)
    assert events.aggregate(s=Sum("cost"))["s"] == held * 3
    assert all(e.unbilled > 0 and e.images == 1 for e in events)
    assert ledger.balance(user.account) == 0
    assert events.filter(key=key).aggregate(s=Sum("cost"))["s"] <= key.spend_cap
    call_command("reconcile", stdout=io.StringIO())


@pytest.mark.usefixtures("catalog")
def test_a_per_image_price_is_held_and_billed(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    model = Model.objects.get(id="gpt-4o")
    current = model.price
    assert current is not None
    PriceVersion.objects.create(
        model=model,
        version=current.version + 1,
        input=current.input,
        output=current.output,
        cached_input=current.cached_input,
        image=Decimal("0.002"),
    )
    publish_catalog(relay)
    body = image_chat(max_tokens=16)
    body["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": PNG}})
    statuses = burst(
        f"{relay.base_url}/chat/completions",
        alice_key,
        body,
        1,
        **{"x-demo-prompt-tokens": "1000", "x-demo-completion-tokens": "16"},
    )
    assert statuses == [200]
    event = wait_until(lambda: UsageEvent.objects.filter(account=alice.account).first())
    assert event.images == 2 and event.unbilled == 0
    assert event.cost == (1000 * current.input + 16 * current.output) / 1_000_000 + Decimal("0.004")
