"""Each provider through its real API shape: what the relay sends a provider is what that
provider takes (its name for the output cap, its name for a parameter), and a parameter a model
does not take is refused with a clear 400 before anything is held, or dropped where the
provider's documentation says it ignores it (relay.adapters.quirks). The demo upstream refuses
what the real providers refuse (simulators.llm.providers), so a quirk left unhandled fails."""

from __future__ import annotations

import json
import tomllib
import urllib.request
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from catalog.models import Model, Provider
from catalog.services import add_price_version, save_model
from catalog.upstreams import UPSTREAMS
from core import state
from relay.adapters import quirks
from relay.errors import RelayError

from .conftest import ROOT, publish_catalog
from .test_relay import a_later_request_recorded, assert_billed_only, chat, post, recorded

# OpenRouter's list for a model that takes no logprobs (a full list: it names seed, penalties).
FULL_LIST = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "tools",
    "tool_choice",
    "response_format",
]


def add_model(
    model_id: str, provider: str, upstream_model: str, supported: list[str] | None = None
) -> Model:
    model = save_model(
        model=Model(
            id=model_id,
            name=model_id,
            provider=Provider.objects.get(slug=provider),
            upstream_model=upstream_model,
            max_output_tokens=4096,
            supported_parameters=supported or [],
        )
    )
    add_price_version(model=model, input=Decimal("1.10"), output=Decimal("4.40"))
    return model


def demo(demo_upstream: str, path: str) -> Any:
    root = demo_upstream.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_demo/{path}", timeout=5) as response:
        return json.loads(response.read())


def sent(demo_upstream: str) -> dict[str, Any]:
    """The body the demo upstream last received."""
    body: dict[str, Any] = demo(demo_upstream, "requests/last")["body"]
    return body


@pytest.fixture
def served(catalog: None, relay: Any) -> Any:
    """OpenAI's o4-mini (a reasoning model), DeepSeek's reasoner and a model whose listed
    parameters leave out logprobs, served by the relay."""
    add_model("o4-mini", "openai", "o4-mini")
    add_model("deepseek-reasoner", "deepseek", "deepseek-reasoner")
    add_model("listed-model", "openai", "gpt-4.1-mini", FULL_LIST)
    publish_catalog(relay)
    return relay


@pytest.fixture
def client(alice_key: str, served: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=alice_key, max_retries=0)


def assert_refused_before_any_hold(
    status: int,
    headers: dict[str, str],
    body: dict[str, Any],
    alice: Any,
    upstream_calls: int,
    demo_upstream: str,
    redis_client: Any,
) -> None:
    assert status == 400, body
    assert demo(demo_upstream, "stats")["requests"] == upstream_calls, "nothing reached it"
    holds = state.account_holds(alice.account.pk)
    assert not redis_client.hexists(holds, headers["x-request-id"])


# ---- through the relay ------------------------------------------------------------------------


def test_max_tokens_reaches_an_openai_reasoning_model_as_max_completion_tokens(
    client: openai.OpenAI, demo_upstream: str, worker: Any
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="o4-mini",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=50,
        temperature=1,
        extra_headers={"x-demo-completion-tokens": "80"},
    )
    reply = raw.parse()
    body = sent(demo_upstream)
    assert body["model"] == "o4-mini"
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert reply.usage is not None and reply.usage.completion_tokens == 50  # the cap held
    event = recorded(raw.headers["x-request-id"])
    assert (event.completion_tokens, event.estimated) == (50, False)


def test_an_openai_reasoning_model_refuses_another_temperature_before_any_hold(
    served: Any, alice: Any, alice_key: str, demo_upstream: str, redis_client: Any, worker: Any
) -> None:
    calls = demo(demo_upstream, "stats")["requests"]
    status, headers, body = post(
        f"{served.base_url}/chat/completions", chat("o4-mini", temperature=0.7), key=alice_key
    )
    assert_refused_before_any_hold(status, headers, body, alice, calls, demo_upstream, redis_client)
    assert body["error"] == {
        "message": "Model 'o4-mini' does not support 0.7 for parameter 'temperature'; only 1 "
        "is supported.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_value",
    }
    assert_billed_only(a_later_request_recorded(served, alice_key))


def test_a_parameter_the_model_does_not_list_is_refused_and_costs_nothing(
    served: Any, alice: Any, alice_key: str, demo_upstream: str, redis_client: Any, worker: Any
) -> None:
    calls = demo(demo_upstream, "stats")["requests"]
    status, headers, body = post(
        f"{served.base_url}/chat/completions",
        chat("listed-model", logprobs=True, top_logprobs=2),
        key=alice_key,
    )
    assert_refused_before_any_hold(status, headers, body, alice, calls, demo_upstream, redis_client)
    assert body == {
        "error": {
            "message": "Model 'listed-model' does not support parameter 'logprobs'.",
            "type": "invalid_request_error",
            "param": "logprobs",
            "code": "unsupported_parameter",
        }
    }
    assert_billed_only(a_later_request_recorded(served, alice_key, "listed-model"))
    # What it lists goes through.
    status, _, body = post(
        f"{served.base_url}/chat/completions",
        chat("listed-model", seed=3, temperature=0.2, max_tokens=20),
        key=alice_key,
    )
    assert status == 200, body
    assert sent(demo_upstream)["seed"] == 3


def test_a_model_without_a_list_takes_every_parameter(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], logprobs=True, seed=1
    )
    body = sent(demo_upstream)
    assert body["logprobs"] is True and body["seed"] == 1


def test_parameters_deepseek_reasoner_ignores_are_dropped_and_logprobs_refused(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    client.chat.completions.create(
        model="deepseek-reasoner",
        messages=[{"role": "user", "content": "Hi"}],
        temperature=0.2,
        top_p=0.5,
        max_completion_tokens=30,
    )
    body = sent(demo_upstream)
    assert "temperature" not in body and "top_p" not in body
    assert body["max_tokens"] == 30 and "max_completion_tokens" not in body
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="deepseek-reasoner", messages=[{"role": "user", "content": "Hi"}], logprobs=True
        )
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "logprobs"


def test_mistral_gets_its_own_names_and_a_stream_billed_from_its_usage(
    client: openai.OpenAI, demo_upstream: str, worker: Any
) -> None:
    client.chat.completions.create(
        model="mistral-small",
        messages=[{"role": "user", "content": "Hi"}],
        seed=42,
        max_completion_tokens=40,
    )
    body = sent(demo_upstream)
    assert body["random_seed"] == 42 and "seed" not in body
    assert body["max_tokens"] == 40 and "max_completion_tokens" not in body
    # Mistral takes no stream_options and sends the usage on its last chunk: the client that
    # asked for usage gets OpenAI's usage-only chunk, and the bill is the upstream's count.
    raw = client.chat.completions.with_raw_response.create(
        model="mistral-small",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-completion-tokens": "9"},
    )
    chunks = list(raw.parse())
    assert "stream_options" not in sent(demo_upstream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].usage is None
    event = recorded(raw.headers["x-request-id"])
    assert (event.completion_tokens, event.estimated, event.status) == (9, False, "ok")


def test_a_mistral_stream_without_usage_asked_carries_none(served: Any, alice_key: str) -> None:
    request = urllib.request.Request(
        f"{served.base_url}/chat/completions",
        data=json.dumps(chat("mistral-small", stream=True)).encode(),
        headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        events = response.read().decode().split("\n\n")
    chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert chunks and all(c["choices"] and "usage" not in c for c in chunks)


def test_the_anthropic_sdk_reaches_an_openai_reasoning_model(
    alice_key: str, served: Any, demo_upstream: str
) -> None:
    claude = anthropic.Anthropic(
        base_url=served.base_url.removesuffix("/v1"), api_key=alice_key, max_retries=0
    )
    message = claude.messages.create(
        model="o4-mini", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].type == "text"
    body = sent(demo_upstream)
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="o4-mini",
            max_tokens=64,
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"temperature": 0.5},
        )
    error = refused.value.body["error"]  # Anthropic's shape
    assert error["type"] == "invalid_request_error" and "'temperature'" in error["message"]


# ---- the demo upstream refuses what the real providers refuse ---------------------------------


@pytest.mark.parametrize(
    ("provider", "extra", "status", "param", "code"),
    [
        (
            "openai",
            {"model": "o4-mini", "max_tokens": 5},
            400,
            "max_tokens",
            "unsupported_parameter",
        ),
        ("", {"model": "gpt-5-mini", "temperature": 0.2}, 400, "temperature", "unsupported_value"),
        ("mistral", {"model": "mistral-small-latest", "seed": 1}, 422, None, None),
        ("mistral", {"model": "mistral-small-latest", "max_completion_tokens": 5}, 422, None, None),
        ("mistral", {"stream": True, "stream_options": {"include_usage": True}}, 422, None, None),
    ],
)
def test_the_demo_upstream_refuses_like_the_provider(
    demo_upstream: str,
    provider: str,
    extra: dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    got, _, body = post(
        f"{demo_upstream}/chat/completions", chat(**extra), key="demo", x_demo_provider=provider
    )
    assert got == status, body
    if status == 400:
        assert (body["error"]["param"], body["error"]["code"]) == (param, code)
    else:
        assert body["message"]["detail"][0]["type"] == "extra_forbidden"


def test_the_demo_upstream_takes_what_the_provider_takes(demo_upstream: str) -> None:
    for provider, extra in (
        ("openai", {"model": "o4-mini", "max_completion_tokens": 5, "temperature": 1}),
        ("mistral", {"model": "mistral-small-latest", "random_seed": 1, "max_tokens": 5}),
        ("", {"model": "gpt-4o", "max_tokens": 5, "seed": 1, "temperature": 0.3}),
        # Mistral's model names elsewhere (an ad-hoc route of a test): OpenAI's leniency.
        ("", {"model": "mistral-small-latest", "seed": 1, "max_completion_tokens": 5}),
    ):
        status, _, body = post(
            f"{demo_upstream}/chat/completions",
            chat(**extra),
            key="demo",
            x_demo_provider=provider,
        )
        assert status == 200, (extra, body)


# ---- the rule table -----------------------------------------------------------------------------

OPENAI = {
    "max_tokens_param": "max_completion_tokens",
    "reasoning_models": ["o1", "o3", "o4", "gpt-5"],
    "reasoning_unsupported": {"temperature": {"only": [1]}, "logprobs": "refuse"},
}


def test_rules_rename_the_cap_for_every_model_and_restrict_only_reasoning_ones() -> None:
    reasoning = quirks.Rules(OPENAI, "o3-mini")
    plain = quirks.Rules(OPENAI, "gpt-4o")
    body = {"model": "m", "max_tokens": 9, "temperature": 0.5, "logprobs": True}
    assert plain.refusal(body, "m") is None
    assert plain.apply(dict(body), stream=False) == {
        "model": "m",
        "max_completion_tokens": 9,
        "temperature": 0.5,
        "logprobs": True,
    }
    error = reasoning.refusal(body, "m")
    assert isinstance(error, RelayError) and error.param in ("temperature", "logprobs")
    assert reasoning.refusal({"temperature": 1, "logprobs": None}, "m") is None
    # A chat snapshot named like a reasoning model but taking sampling parameters.
    chat = quirks.Rules({**OPENAI, "not_reasoning_models": ["gpt-5-chat"]}, "gpt-5-chat-latest")
    assert chat.refusal(body, "m") is None
    assert quirks.Rules({**OPENAI, "not_reasoning_models": ["gpt-5-chat"]}, "gpt-5").refusal(
        body, "m"
    )


def test_both_caps_become_the_smaller_under_the_upstreams_name() -> None:
    rules = quirks.Rules({"max_tokens_param": "max_tokens"})
    body = {"max_tokens": 100, "max_completion_tokens": 30}
    assert rules.apply(body, stream=False) == {"max_tokens": 30}
    assert quirks.NONE.apply({"max_tokens": 5}, stream=False) == {"max_tokens": 5}


def test_the_existing_quirks_still_apply() -> None:
    rules = quirks.Rules(
        {
            "send_stream_options": False,
            "drop_params": ["user"],
            "rename_params": {"seed": "random_seed"},
        }
    )
    out = rules.apply({"user": "u", "seed": 4, "stream_options": {"x": 1}}, stream=True)
    assert out == {"random_seed": 4}
    asked = quirks.NONE.apply({"stream_options": {"include_usage": False}}, stream=True)
    assert asked == {"stream_options": {"include_usage": True}}


def test_only_rules_refuse_other_values_and_unknown_rules_are_ignored() -> None:
    groq = quirks.Rules({"unsupported": {"n": {"only": [1]}, "logit_bias": "refuse", "x": "?"}})
    assert groq.refusal({"n": 1}, "m") is None
    refused = groq.refusal({"n": 2}, "llama")
    assert refused is not None and refused.code == "unsupported_value"
    assert (
        refused.message
        == "Model 'llama' does not support 2 for parameter 'n'; only 1 is supported."
    )
    assert groq.refusal({"logit_bias": {"1": 2}}, "m") is not None


def model_entry(supported: list[str], *routes: dict[str, Any]) -> dict[str, Any]:
    return {"id": "m", "supported_parameters": supported, "routes": list(routes)}


def route(upstream_model: str = "u", **options: Any) -> dict[str, Any]:
    return {"provider": "p", "upstream_model": upstream_model, "options": options}


def test_a_list_from_capability_flags_checks_only_what_flags_can_say() -> None:
    flags = model_entry(["max_tokens", "stop", "tools", "tool_choice"], route())
    body = {"model": "m", "seed": 1, "logprobs": True, "frequency_penalty": 0.1}
    assert quirks.routes_for(flags, body, "chat") == flags["routes"]  # says nothing of these
    with pytest.raises(RelayError) as refused:
        quirks.routes_for(flags, {"model": "m", "temperature": 0.3}, "chat")
    assert refused.value.param == "temperature"
    with pytest.raises(RelayError):  # a JSON schema needs "structured_outputs"
        quirks.routes_for(flags, {"model": "m", "response_format": {"type": "json_schema"}}, "chat")
    unknown = model_entry([], route())
    assert quirks.routes_for(unknown, {"model": "m", "temperature": 9, "top_k": 3}, "chat")


def test_messages_requests_are_checked_by_anthropics_names() -> None:
    model = model_entry(["max_tokens", "tools"], route())
    with pytest.raises(RelayError) as refused:
        quirks.routes_for(model, {"model": "m", "stop_sequences": ["x"]}, "messages")
    assert refused.value.param == "stop_sequences"
    assert quirks.routes_for(model, {"model": "m", "max_tokens": 5}, "messages")


def test_a_route_that_refuses_is_skipped_for_one_that_takes_the_request() -> None:
    strict = route(unsupported={"logprobs": "refuse"})
    lenient = route()
    dropping = route(unsupported={"logprobs": "drop"})
    model = model_entry([], strict, lenient)
    assert quirks.routes_for(model, {"model": "m", "logprobs": True}, "chat") == [lenient]
    assert quirks.routes_for(model, {"model": "m"}, "chat") == [strict, lenient]
    with pytest.raises(RelayError) as refused:
        quirks.routes_for(model_entry([], strict), {"model": "m", "logprobs": True}, "chat")
    assert refused.value.code == "unsupported_parameter"
    # A model that does not list it, on a provider that ignores it: dropped, not refused.
    listed = model_entry(FULL_LIST, dropping)
    assert quirks.routes_for(listed, {"model": "m", "logprobs": True}, "chat") == [dropping]
    assert quirks.of_route(dropping).apply({"logprobs": True}, stream=False) == {}


def test_rules_are_built_once_per_catalog_entry() -> None:
    entry = route("o1", **OPENAI)
    assert quirks.of_route(entry) is quirks.of_route(entry)
    model = model_entry(FULL_LIST, entry)
    assert quirks.of_model(model) is quirks.of_model(model)


def test_every_provider_table_is_made_of_known_keys_and_rules(caplog: Any) -> None:
    seed = tomllib.loads((ROOT / "catalog" / "catalog.toml").read_text())["providers"]
    tables = [u.options for u in UPSTREAMS] + [p.get("options", {}) for p in seed.values()]
    assert any(tables)
    for options in tables:
        assert set(options) <= quirks.KEYS, options
        for prefix in options.get("reasoning_models") or [""]:
            quirks.Rules(options, prefix)
    assert "ignoring" not in caplog.text
