"""The demo upstream honours what the docs show: JSON mode, JSON schemas, tool calls and
embedding sizes, as the real SDKs see them (the simulator in a thread, no Django)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pydantic
import pytest

from simulators.llm import RunningServer, start_in_thread

HELLO: Any = [{"role": "user", "content": "Hello there"}]

ADDRESS: Any = {
    "type": "object",
    "properties": {
        "street": {"type": "string", "minLength": 8},
        "zip": {"type": "string", "maxLength": 3},
    },
    "required": ["street", "zip"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, Any] = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "enum-and-bounds": {
        "type": "object",
        "properties": {
            "mood": {"type": "string", "enum": ["happy", "sad"]},
            "score": {"type": "number", "minimum": 3, "maximum": 4},
            "rank": {"type": "integer", "exclusiveMinimum": 10},
            "flag": {"type": ["boolean", "null"]},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["mood", "score", "rank", "flag", "when"],
        "additionalProperties": False,
    },
    "nested-arrays": {
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "minItems": 2,
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "address": ADDRESS},
                    "required": ["name", "address"],
                    "additionalProperties": False,
                },
            },
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
        },
        "required": ["people", "tags"],
        "additionalProperties": False,
    },
    "defs-and-anyof": {
        "type": "object",
        "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            "answer": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "merged": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}},
                    {"properties": {"b": {"const": 2}}, "required": ["a", "b"]},
                ]
            },
        },
        "required": ["steps", "answer", "merged"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_in_thread()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root_url, api_key="demo", max_retries=0, timeout=10)


def streamed_content(oai: openai.OpenAI, **request: Any) -> tuple[str, list[Any]]:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", stream=True, **request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_json_mode_answers_a_json_object_plain_and_streamed(oai: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_object"}
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, response_format=fmt
    )
    content = completion.choices[0].message.content
    assert content is not None and isinstance(json.loads(content), dict)
    assert completion.choices[0].finish_reason == "stop"

    text, chunks = streamed_content(oai, messages=HELLO, response_format=fmt)
    assert json.loads(text) == json.loads(content)
    assert len(chunks) > 3, "the JSON is streamed in pieces, as a model writes it"
    assert chunks[-1].choices[0].finish_reason == "stop"

    plain = oai.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, response_format={"type": "text"}
    )
    assert plain.choices[0].message.content.startswith("This is a demo response")


@pytest.mark.parametrize("name", SCHEMAS)
def test_json_schema_answers_validate(oai: openai.OpenAI, name: str) -> None:
    schema = SCHEMAS[name]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    for strict in (True, False):
        fmt["json_schema"]["strict"] = strict
        completion = oai.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, response_format=fmt
        )
        jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)
        text, _ = streamed_content(oai, messages=HELLO, response_format=fmt)
        jsonschema.validate(json.loads(text), schema)


class Step(pydantic.BaseModel):
    explanation: str
    output: int


class Solution(pydantic.BaseModel):
    steps: list[Step]
    verdict: Literal["right", "wrong"]
    confidence: float | None


def test_the_sdks_structured_output_parser_accepts_the_answer(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.parse(
        model="gpt-4o-mini", messages=HELLO, response_format=Solution
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Solution) and parsed.steps and parsed.verdict == "right"


def test_response_format_is_validated(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_type:
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            response_format={"type": "xml"},
        )
    assert bad_type.value.body["param"] == "response_format.type"
    with pytest.raises(openai.BadRequestError) as no_name:
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            response_format={"type": "json_schema", "json_schema": {"schema": {}}},
        )
    assert no_name.value.body["param"] == "response_format.json_schema.name"


TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
    },
    {
        "type": "function",
        "function": {
            "name": "book_trip",
            "parameters": SCHEMAS["nested-arrays"],
            "strict": True,
        },
    },
]


def test_tool_choice_names_the_tool_and_arguments_fit_plain_and_streamed(
    oai: openai.OpenAI,
) -> None:
    choice: Any = {"type": "function", "function": {"name": "book_trip"}}
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, tools=TOOLS, tool_choice=choice
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    calls = completion.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "book_trip"
    jsonschema.validate(json.loads(calls[0].function.arguments), SCHEMAS["nested-arrays"])

    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, tools=TOOLS, tool_choice=choice, stream=True
        )
    )
    first = chunks[0].choices[0].delta.tool_calls
    assert first and first[0].index == 0 and first[0].id and first[0].type == "function"
    assert first[0].function and first[0].function.name == "book_trip"
    pieces = [c.choices[0].delta.tool_calls for c in chunks[1:-1]]
    assert all(p and p[0].index == 0 and p[0].id is None for p in pieces)
    arguments = "".join(p[0].function.arguments for p in pieces if p and p[0].function)
    assert json.loads(arguments) == json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    auto = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, tools=TOOLS)
    assert (auto.choices[0].message.tool_calls or [])[0].function.name == "noop"


def test_anthropic_tool_use_streamed_fits_the_named_tool(claude: anthropic.Anthropic) -> None:
    tools: Any = [
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
        {"name": "book_trip", "input_schema": SCHEMAS["nested-arrays"]},
    ]
    with claude.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=HELLO,
        tools=tools,
        tool_choice={"type": "tool", "name": "book_trip"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    block = final.content[0]
    assert final.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "book_trip"
    jsonschema.validate(block.input, SCHEMAS["nested-arrays"])


def test_anthropic_system_prompt_asking_for_json_gets_json(claude: anthropic.Anthropic) -> None:
    schema = SCHEMAS["enum-and-bounds"]
    system = "Respond with JSON only: no prose. The JSON must conform to this JSON Schema:\n"
    message = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        system=system + json.dumps(schema),
        messages=HELLO,
    )
    assert message.content[0].type == "text"
    jsonschema.validate(json.loads(message.content[0].text), schema)

    with claude.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        system=[{"type": "text", "text": "Respond with a single valid JSON object only."}],
        messages=HELLO,
    ) as stream:
        text = "".join(stream.text_stream)
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("mistral-embed", 1024),
        ("demo-embed", 1024),
    ],
)
def test_embeddings_have_the_models_size(oai: openai.OpenAI, model: str, size: int) -> None:
    result = oai.embeddings.create(model=model, input=["alpha", "beta"])
    assert [len(d.embedding) for d in result.data] == [size, size]


def test_embedding_dimensions_where_openai_allows_them(oai: openai.OpenAI) -> None:
    short = oai.embeddings.create(model="text-embedding-3-large", input="alpha", dimensions=256)
    assert len(short.data[0].embedding) == 256
    with pytest.raises(openai.BadRequestError, match="between 1 and 1536"):
        oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=2048)
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        oai.embeddings.create(model="text-embedding-ada-002", input="alpha", dimensions=256)
    assert len(oai.embeddings.create(model="text-embedding-ada-002", input="a").data[0].embedding)
