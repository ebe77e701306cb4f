"""The relay's one SSE parser (``relay.sse``) and the OpenAI pass-through built on it.

Where the upstream's reads are split must never change what the client receives or what is
billed: each stream below is fed whole, split at every single point, and split at random
points, and compared with the pass-through as it was before it shared the parser (kept here
as the reference).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters import openai as openai_adapter
from relay.exchange import OpenAIPassthrough
from relay.sse import SSEParser
from relay.usage import Usage

HEAD = {
    "id": "chatcmpl-9zUOR1VqU1yZ6XcJ1b4n5cQ2aZ0pL",
    "object": "chat.completion.chunk",
    "created": 1724198345,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_48196bc67a",
}
USAGE = {
    "prompt_tokens": 1117,
    "completion_tokens": 6,
    "total_tokens": 1123,
    "prompt_tokens_details": {"cached_tokens": 1024},
}


def chunk(delta: dict[str, Any], finish: str | None = None, *, usage_null: bool = True) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    payload: dict[str, Any] = {**HEAD, "choices": [choice]}
    if usage_null:
        payload["usage"] = None
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def openai_stream(words: int = 6) -> bytes:
    """OpenAI's order with include_usage: role, content, finish, the usage-only chunk, [DONE]."""
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f" word{i}"}) for i in range(words)]
    events.append(chunk({}, "stop"))
    events.append(b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": USAGE}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


STREAMS: dict[str, bytes] = {
    "openai": openai_stream(),
    "openai_crlf": openai_stream().replace(b"\n", b"\r\n"),
    # Usage on the finish chunk with spaces after the colons (Python's json.dumps style), as
    # some OpenAI-compatible servers send it; DeepSeek's cache figure.
    "usage_with_choices": (
        chunk({"role": "assistant", "content": "Hi"}, usage_null=False)
        + b'data: {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 9, "completion_tokens": 1, "prompt_cache_hit_tokens": 8}}'
        b"\n\ndata: [DONE]\n\n"
    ),
    # Comments (OpenRouter's keep-alives), event: lines, runs of blank lines, a [DONE] with
    # something after it, and no usage at all.
    "comments_and_blank_runs": (
        b": OPENROUTER PROCESSING\n\n\n\n"
        + chunk({"content": "a"})
        + b"\n\nevent: message\ndata: "
        + orjson.dumps({**HEAD, "choices": [{"index": 0, "delta": {"content": "b"}}]})
        + b"\n\n\n"
        + b"data: [DONE] \n\n"
    ),
    # A usage chunk that is not JSON, and a stream cut off in the middle of an event.
    "broken_usage_and_cut": (
        chunk({"content": "x"}) + b'data: {"usage":{"prompt_tokens": oops}\n\n' + b'data: {"cho'
    ),
    # The last event lacks its blank line.
    "no_final_blank_line": chunk({"content": "x"}) + b"data: [DONE]\n",
    "empty": b"",
}


class Reference:
    """``OpenAIPassthrough`` before it read through ``relay.sse`` (as of 922abfd)."""

    def __init__(self, wants_usage: bool) -> None:
        self.wants_usage = wants_usage
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.buffer = b""

    def feed(self, data: bytes) -> bytes:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buffer = self.buffer + data
        if b"\n\n" not in buffer:
            self.buffer = buffer
            return b""
        *events, self.buffer = buffer.split(b"\n\n")
        out = []
        for event in events:
            if not event:
                continue
            if event.startswith(b"data: [DONE]"):
                self.finished = True
            elif b'"usage":{' in event or b'"usage": {' in event:
                start = event.find(b"{")
                try:
                    payload = orjson.loads(event[start:])
                except orjson.JSONDecodeError:
                    payload = {}
                self.usage = openai_adapter.usage_of(payload) or self.usage
                if not self.wants_usage and not payload.get("choices"):
                    continue
                if payload.get("choices"):
                    self.chunks += 1
            else:
                self.chunks += 1
            out.append(event)
        if not out:
            return b""
        out.append(b"")
        return b"\n\n".join(out)

    def close(self) -> bytes:
        rest, self.buffer = self.buffer, b""
        return rest if rest.strip() else b""


Outcome = tuple[bytes, Usage | None, int, bool]


def passthrough(pieces: list[bytes], wants_usage: bool, cls: Any = OpenAIPassthrough) -> Outcome:
    translator = cls(wants_usage)
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.close()
    return out, translator.usage, translator.chunks, translator.finished


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(raw)]
    return [raw[a:b] for a, b in pairwise(bounds)]


@pytest.mark.parametrize("wants_usage", [True, False])
@pytest.mark.parametrize("name", list(STREAMS))
def test_it_passes_a_stream_through_as_before_wherever_its_reads_are_split(
    name: str, wants_usage: bool
) -> None:
    raw = STREAMS[name]
    expected = passthrough([raw], wants_usage, Reference)
    assert passthrough([raw], wants_usage) == expected
    for i in range(len(raw) + 1):  # every split point, including between \r and \n
        assert passthrough(cut(raw, [i]), wants_usage) == expected, i
    assert passthrough([raw[i : i + 1] for i in range(len(raw))], wants_usage) == expected


def test_the_usage_only_chunk_reaches_only_a_client_that_asked_for_it() -> None:
    raw = STREAMS["openai"]
    asked, usage, chunks, finished = passthrough([raw], True)
    assert asked == raw and finished
    assert usage == Usage(1117, 6, 1024) and chunks == 8  # role, six words, finish
    not_asked, usage, _, _ = passthrough([raw], False)
    assert b'"choices":[]' not in not_asked and usage == Usage(1117, 6, 1024)
    assert passthrough([STREAMS["openai_crlf"]], True)[0] == raw


@given(
    st.sampled_from(sorted(STREAMS)),
    st.booleans(),
    st.lists(st.integers(0, 10_000), max_size=40),
)
@settings(max_examples=500, deadline=None)
def test_random_splits_change_nothing(name: str, wants_usage: bool, points: list[int]) -> None:
    raw = STREAMS[name]
    pieces = cut(raw, [p % (len(raw) + 1) for p in points])
    assert passthrough(pieces, wants_usage) == passthrough([raw], wants_usage, Reference)


def parse(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.flush()


@given(
    st.sampled_from(sorted(STREAMS)),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(0, 10_000), max_size=40),
)
@settings(max_examples=500, deadline=None)
def test_the_parser_reads_the_same_events_whatever_the_line_ends_and_splits(
    name: str, newline: bytes, points: list[int]
) -> None:
    lf = STREAMS[name].replace(b"\r\n", b"\n")
    raw = lf.replace(b"\n", newline)
    pieces = cut(raw, [p % (len(raw) + 1) for p in points])
    assert parse(pieces) == parse([lf])


def test_the_parser_reads_fields_and_blocks_stay_raw() -> None:
    raw = b": hi\nevent: ping\nid: 7\ndata: a\ndata:b\n\ndata: [DONE]\n\nevent: x\n\ndata: tail"
    assert parse([raw]) == [("ping", b"a\nb"), ("", b"[DONE]"), ("", b"tail")]
    parser = SSEParser()
    assert parser.blocks(raw) == [
        b": hi\nevent: ping\nid: 7\ndata: a\ndata:b",
        b"data: [DONE]",
        b"event: x",
    ]
    assert parser.rest() == b"data: tail" and parser.rest() == b""
