"""``POST /v1/completions`` on the relay (the openai SDK): Codestral's fill-in-the-middle through
Mistral's FIM API, plain and streamed, billed exactly as chat is."""

from __future__ import annotations

import io
import json
import socket
import urllib.request
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.core.management import call_command

from billing.models import UsageEvent
from catalog.models import Model, Provider, Route
from catalog.services import new_price_version
from core.pricing import cost

from .conftest import ALICE_STARTS_WITH, publish_catalog, wait_until
from .test_relay import a_later_request_recorded, price_of, recorded

pytestmark = pytest.mark.usefixtures("catalog")

PREFIX = "def add(a, b):\n"
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


def fim_requests(demo_upstream: str) -> list[dict[str, Any]]:
    root = demo_upstream.removesuffix("/v1")
    url = f"{root}/_demo/requests?path=/v1/fim/completions"
    with urllib.request.urlopen(url, timeout=5) as response:
        return [entry["body"] for entry in json.loads(response.read())["requests"]]


def last_request(demo_upstream: str) -> dict[str, Any]:
    root = demo_upstream.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_demo/requests/last", timeout=5) as response:
        return dict(json.loads(response.read()))


def clear_demo_requests(demo_upstream: str) -> None:
    root = demo_upstream.removesuffix("/v1")
    request = urllib.request.Request(f"{root}/_demo/requests", method="DELETE")
    urllib.request.urlopen(request, timeout=5).close()


def balance() -> Decimal:
    out = io.StringIO()
    call_command("balance", "alice@example.com", stdout=out)
    return Decimal(out.getvalue().splitlines()[0])


def test_a_codestral_fim_completion_is_answered_and_billed_exactly(
    client: openai.OpenAI, demo_upstream: str, worker: Any
) -> None:
    clear_demo_requests(demo_upstream)
    raw = client.completions.with_raw_response.create(
        model="codestral",
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=64,
        temperature=0.2,
        stop=["\n\n\n"],
        seed=7,
        extra_headers={"x-demo-prompt-tokens": "30", "x-demo-completion-tokens": "12"},
    )
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.model == "codestral"
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 12)

    # Mistral's FIM API got the prompt and the suffix, in its own names.
    [sent] = fim_requests(demo_upstream)
    assert sent["model"] == "codestral-latest"
    assert (sent["prompt"], sent["suffix"]) == (PREFIX, SUFFIX)
    assert sent["max_tokens"] == 64 and sent["random_seed"] == 7 and "seed" not in sent
    assert sent["stream"] is False

    event = recorded(raw.headers["x-request-id"])
    expected = cost(price_of("codestral"), prompt_tokens=30, completion_tokens=12)
    assert (event.prompt_tokens, event.completion_tokens) == (30, 12)
    assert event.cost == expected and not event.estimated and not event.streamed
    assert event.model_id == "codestral"
    wait_until(lambda: balance() == ALICE_STARTS_WITH - expected)


def test_a_streamed_fim_completion_arrives_and_is_billed_exactly(
    client: openai.OpenAI, demo_upstream: str, worker: Any
) -> None:
    clear_demo_requests(demo_upstream)
    stream = client.completions.create(
        model="codestral",
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=100,
        stream=True,
        extra_headers={"x-demo-prompt-tokens": "25", "x-demo-completion-tokens": "20"},
    )
    chunks = list(stream)
    request_id = stream.response.headers["x-request-id"]
    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == 20
    [sent] = fim_requests(demo_upstream)
    assert sent["stream"] is True and sent["suffix"] == SUFFIX
    assert "stream_options" not in sent

    event = recorded(request_id)
    assert (event.prompt_tokens, event.completion_tokens) == (25, 20)
    assert event.streamed and not event.estimated
    assert event.cost == cost(price_of("codestral"), prompt_tokens=25, completion_tokens=20)


def test_a_stream_asking_for_usage_gets_it_on_a_last_chunk_of_its_own(
    client: openai.OpenAI,
) -> None:
    stream = client.completions.create(
        model="codestral",
        prompt=PREFIX,
        suffix=SUFFIX,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-completion-tokens": "8"},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_fim_stream_cut_by_the_upstream_is_billed_as_an_estimate(
    client: openai.OpenAI, worker: Any
) -> None:
    stream = client.completions.create(
        model="codestral",
        prompt=PREFIX,
        suffix=SUFFIX,
        stream=True,
        extra_headers={"x-demo-error": "cut", "x-demo-completion-tokens": "30"},
    )
    request_id = stream.response.headers["x-request-id"]
    received = list(stream)  # the body ends without [DONE] nor a finish_reason
    assert received and all(c.choices[0].finish_reason is None for c in received)
    event = recorded(request_id)
    assert event.estimated and event.status == "upstream_cut"
    assert event.completion_tokens > 0 and event.cost > 0


def test_a_chat_only_model_is_refused_by_name_and_nothing_is_billed(
    client: openai.OpenAI, relay: Any, alice_key: str, worker: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="mistral-large-2", prompt="Hello", max_tokens=5)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "unsupported_endpoint" and error["param"] == "model"
    assert "mistral-large-2" in error["message"] and "/v1/chat/completions" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="Hello")
    later = a_later_request_recorded(relay, alice_key)
    assert UsageEvent.objects.count() == 1 and UsageEvent.objects.get() == later


def test_parameters_fim_does_not_take_are_refused_before_anything_is_sent(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    clear_demo_requests(demo_upstream)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="codestral", prompt=PREFIX, suffix=SUFFIX, n=2)
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="codestral", prompt=["one", "two"], suffix=SUFFIX)
    assert caught.value.body["param"] == "prompt"  # type: ignore[index]
    assert fim_requests(demo_upstream) == []
    # Defaults of OpenAI's parameters that FIM lacks are left out, not refused.
    completion = client.completions.create(
        model="codestral",
        prompt=[PREFIX],
        suffix=SUFFIX,
        n=1,
        echo=False,
        presence_penalty=0,
        user="ide-plugin",
    )
    assert completion.choices[0].text
    [sent] = fim_requests(demo_upstream)
    assert set(sent) <= {"model", "prompt", "suffix", "stream"}
    assert sent["prompt"] == PREFIX


def test_a_client_that_hangs_up_mid_stream_is_billed_what_was_sent(
    relay: Any, alice_key: str, worker: Any
) -> None:
    body = json.dumps(
        {"model": "codestral", "prompt": PREFIX, "suffix": SUFFIX, "stream": True}
    ).encode()
    host, port = relay.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: relay\r\n"
            + b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {alice_key}\r\nx-demo-completion-tokens: 64\r\n".encode()
            + b"x-demo-chunk-delay-ms: 100\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b'"text_completion"') < 4:
            received += sock.recv(65536)
    request_id = received.split(b"x-request-id: ")[1].split(b"\r\n")[0].decode()
    event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
    assert (event.status, event.estimated) == ("client_closed", True)
    assert 0 < event.completion_tokens < 64
    assert event.cost > 0


# ---- an OpenAI-shaped upstream with /v1/completions: passed through ---------------------------


@pytest.fixture
def instruct(relay: Any) -> str:
    """OpenAI's gpt-3.5-turbo-instruct in the catalog, on the OpenAI provider (the demo
    upstream in the test stack), whose options list it among the completion models."""
    model = Model.objects.create(
        id="gpt-3.5-turbo-instruct",
        name="GPT-3.5 Turbo Instruct",
        provider=Provider.objects.get(slug="openai"),
        upstream_model="gpt-3.5-turbo-instruct",
        context_window=4096,
        max_output_tokens=4096,
    )
    new_price_version(model=model, source="file", input=Decimal("1.50"), output=Decimal("2.00"))
    Route.objects.create(
        model=model, provider=model.provider, upstream_model="gpt-3.5-turbo-instruct"
    )
    publish_catalog(relay)
    return model.id


def test_an_openai_completion_model_is_passed_through_and_billed(
    client: openai.OpenAI, demo_upstream: str, instruct: str, worker: Any
) -> None:
    clear_demo_requests(demo_upstream)
    raw = client.completions.with_raw_response.create(
        model=instruct,
        prompt="Say this is a test",
        max_tokens=7,
        extra_headers={"x-demo-prompt-tokens": "5", "x-demo-completion-tokens": "7"},
    )
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.choices[0].text
    sent = last_request(demo_upstream)
    assert sent["path"] == "/v1/completions"
    assert sent["body"]["model"] == "gpt-3.5-turbo-instruct" and sent["body"]["max_tokens"] == 7
    event = recorded(raw.headers["x-request-id"])
    assert (event.prompt_tokens, event.completion_tokens) == (5, 7)
    assert event.cost == cost(price_of(instruct), prompt_tokens=5, completion_tokens=7)

    stream = client.completions.create(
        model=instruct,
        prompt="Say this is a test",
        max_tokens=7,
        stream=True,
        extra_headers={"x-demo-prompt-tokens": "5", "x-demo-completion-tokens": "7"},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # asked for by the relay, not by the client
    event = recorded(stream.response.headers["x-request-id"])
    assert (event.prompt_tokens, event.completion_tokens, event.streamed) == (5, 7, True)
    assert not event.estimated


# ---- the translation alone ----------------------------------------------------------------------


def fim_chunk(content: str | None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_fim_stream_split_anywhere_translates_the_same(include_usage: bool) -> None:
    from relay.adapters.completions import FimStreamToCompletions
    from relay.exchange import FimChunksToCompletions

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    raw = (
        fim_chunk("", None)
        + fim_chunk("ret")
        + fim_chunk("urn a + b")
        + fim_chunk("", "model_length", usage=usage)
        + b"data: [DONE]\n\n"
    )
    outputs = []
    for size in (1, 7, len(raw)):
        translator = FimChunksToCompletions(
            FimStreamToCompletions("codestral", "cmpl-1", include_usage)
        )
        out = b"".join(translator.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        out += translator.close()
        assert translator.finished and translator.chunks == 2
        assert translator.usage is not None and translator.usage.completion_tokens == 2
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]
    events = [e.removeprefix(b"data: ") for e in outputs[0].split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "return a + b"
    finishing = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert finishing["choices"][0]["finish_reason"] == "length"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
        assert "usage" not in finishing
    else:
        assert finishing is chunks[-1] and finishing["usage"] == usage


def test_fim_requests_are_mistrals() -> None:
    from relay.adapters import quirks
    from relay.adapters.completions import fim_request
    from relay.errors import RelayError

    rules = quirks.Rules(
        {
            "rename_params": {"seed": "random_seed"},
            "send_stream_options": False,
            "max_tokens_param": "max_tokens",
        },
        "codestral-latest",
    )
    body = {
        "model": "codestral",
        "prompt": ["a"],
        "suffix": None,
        "seed": 3,
        "n": 1,
        "logprobs": None,
        "stream_options": {"include_usage": True},
        "min_tokens": 2,
    }
    assert fim_request(body, "codestral-latest", stream=True, rules=rules) == {
        "model": "codestral-latest",
        "prompt": "a",
        "random_seed": 3,
        "min_tokens": 2,
        "stream": True,
    }
    for name, value in (("echo", True), ("best_of", 2), ("presence_penalty", 0.5), ("n", True)):
        with pytest.raises(RelayError) as caught:
            fim_request({**body, name: value}, "codestral-latest", stream=False, rules=rules)
        assert caught.value.status == 400 and caught.value.param == name
    with pytest.raises(RelayError) as caught:
        fim_request({**body, "prompt": [[1, 2, 3]]}, "codestral-latest", stream=False, rules=rules)
    assert caught.value.param == "prompt"
