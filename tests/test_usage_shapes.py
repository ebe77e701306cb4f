"""Reading each provider's usage dialect (relay.adapters), and the demo upstream speaking them
(simulators.llm.usage): the same request's figures, whoever reports them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from relay.adapters.anthropic import usage_from_anthropic
from relay.adapters.openai import usage_of
from relay.usage import Usage


def test_openai_details_are_parts_of_the_wholes() -> None:
    usage = {
        "prompt_tokens": 3000,
        "completion_tokens": 350,
        "total_tokens": 3350,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 500},
        "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 50},
    }
    assert usage_of({"usage": usage}) == Usage(
        3000, 350, 1000, reasoning_tokens=200, input_audio_tokens=500, output_audio_tokens=50
    )


def test_deepseek_cache_hits_and_openrouter_cache_writes() -> None:
    deepseek = {
        "prompt_tokens": 3000,
        "completion_tokens": 500,
        "total_tokens": 3500,
        "prompt_cache_hit_tokens": 2000,
        "prompt_cache_miss_tokens": 1000,
        "completion_tokens_details": {"reasoning_tokens": 400},
    }
    assert usage_of({"usage": deepseek}) == Usage(3000, 500, 2000, reasoning_tokens=400)
    openrouter = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 60},
    }
    assert usage_of({"usage": openrouter}) == Usage(100, 5, 0, cache_write_tokens=60)


def test_output_left_out_of_completion_tokens_is_reasoning() -> None:
    # Gemini's OpenAI-compatible endpoint: thoughts only in total_tokens.
    gemini = {"prompt_tokens": 20, "completion_tokens": 424, "total_tokens": 1016}
    assert usage_of({"usage": gemini}) == Usage(20, 996, 0, reasoning_tokens=572)
    # xAI: thoughts in total_tokens and in the details, not in completion_tokens.
    xai = {
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 150,
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    assert usage_of({"usage": xai}) == Usage(20, 130, 0, reasoning_tokens=120)
    # Nonsense is read as nothing, never as a negative count.
    odd = {"prompt_tokens": None, "completion_tokens": -3, "total_tokens": "x"}
    assert usage_of({"usage": odd}) == Usage(0, 0)


def test_anthropic_cache_writes_by_lifetime() -> None:
    split = {
        "input_tokens": 500,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 2500,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 1500},
        "output_tokens": 300,
    }
    assert usage_from_anthropic(split) == Usage(
        5000, 300, 2000, cache_write_tokens=1000, cache_write_1h_tokens=1500
    )
    # Without the split (older API versions) a write is a 5-minute one.
    older = {"input_tokens": 10, "cache_creation_input_tokens": 90, "output_tokens": 1}
    assert usage_from_anthropic(older) == Usage(100, 1, 0, cache_write_tokens=90)


def demo_usage(base_url: str, model: str, **headers: str) -> tuple[int, Any]:
    """(status, the usage of a 200 or the error body) of a chat request to the demo upstream."""
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}]}).encode(),
        headers={"Authorization": "Bearer demo", "Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())["usage"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


COUNTS = {
    "x-demo-prompt-tokens": "300",
    "x-demo-cached-tokens": "100",
    "x-demo-completion-tokens": "10",
    "x-demo-reasoning-tokens": "30",
}


@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        ("gpt-5-mini", "", Usage(300, 40, 100, reasoning_tokens=30)),
        ("deepseek-reasoner", "", Usage(300, 40, 100, reasoning_tokens=30)),
        # Gemini's dialect has no cached tokens to report.
        ("gemini-2.5-flash", "", Usage(300, 40, 0, reasoning_tokens=30)),
        ("demo-chat", "gemini", Usage(300, 40, 0, reasoning_tokens=30)),
    ],
)
def test_the_demo_upstream_speaks_each_dialect(
    demo_upstream: str, model: str, shape: str, expected: Usage
) -> None:
    headers = {**COUNTS, "x-demo-usage-shape": shape} if shape else COUNTS
    status, usage = demo_usage(demo_upstream, model, **headers)
    assert status == 200
    if model.startswith("deepseek"):
        assert "prompt_tokens_details" not in usage and usage["prompt_cache_hit_tokens"] == 100
    if model.startswith("gemini") or shape == "gemini":
        assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage_of({"usage": usage}) == expected


def test_the_demo_upstream_refuses_an_unknown_dialect(demo_upstream: str) -> None:
    status, body = demo_usage(demo_upstream, "demo-chat", **{"x-demo-usage-shape": "cohere"})
    assert status == 400 and "x-demo-usage-shape" in body["error"]["message"]
