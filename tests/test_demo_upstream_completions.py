"""The demo upstream's text completions: Mistral's FIM API (``/v1/fim/completions``) in
Mistral's shape and strictness, and OpenAI's legacy ``/v1/completions`` as the openai SDK reads
it (the simulator in a thread, no Django)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from simulators.llm import RunningServer, start_in_thread

PREFIX = "def add(a, b):\n"
SUFFIX = "\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_in_thread() as running:
        yield running


def post(
    server: RunningServer, path: str, body: dict[str, Any], **headers: str
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{server.base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer demo", "Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sse(raw: bytes) -> list[Any]:
    events = [line.removeprefix(b"data: ") for line in raw.split(b"\n") if line.strip()]
    assert events[-1] == b"[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_fim_answers_in_mistrals_shape_with_usage(server: RunningServer) -> None:
    status, raw = post(
        server,
        "/fim/completions",
        {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 64},
        **{"x-demo-completion-tokens": "9"},
    )
    assert status == 200
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    prompt = math.ceil((len(PREFIX) + len(SUFFIX)) / 4)
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 9,
        "total_tokens": prompt + 9,
    }


def test_a_fim_stream_carries_its_usage_on_the_finishing_chunk(server: RunningServer) -> None:
    status, raw = post(
        server,
        "/fim/completions",
        {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "stream": True},
        **{"x-demo-completion-tokens": "6", "x-demo-prompt-tokens": "11"},
    )
    assert status == 200
    chunks = sse(raw)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    assert chunks[-1]["usage"]["prompt_tokens"] == 11
    assert all("usage" not in c for c in chunks[:-1])


def test_fim_refuses_what_mistrals_schema_does_not_have(server: RunningServer) -> None:
    status, raw = post(
        server,
        "/fim/completions",
        {"model": "codestral-latest", "prompt": PREFIX, "seed": 1, "n": 1},
    )
    assert status == 422
    detail = json.loads(raw)["message"]["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("body", "seed"), ("body", "n")}
    assert post(server, "/fim/completions", {"model": "codestral-latest"})[0] == 422
    status, _ = post(
        server,
        "/fim/completions",
        {"model": "codestral-latest", "prompt": PREFIX, "random_seed": 1},
    )
    assert status == 200


def test_legacy_completions_work_with_the_openai_sdk(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0)
    completion = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=5
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text and completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say this is a test",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason is not None


def test_injected_faults_apply_to_both(server: RunningServer) -> None:
    body = {"model": "codestral-latest", "prompt": PREFIX}
    assert post(server, "/fim/completions", body, **{"x-demo-error": "503"})[0] == 503
    status, raw = post(server, "/fim/completions", body, **{"x-demo-error": "no-usage"})
    assert status == 200 and "usage" not in json.loads(raw)
    legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"}
    assert post(server, "/completions", legacy, **{"x-demo-error": "429"})[0] == 429
