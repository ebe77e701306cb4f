"""An Anthropic upstream's answer for an OpenAI chat client: the whole message
(:func:`anthropic_response_to_openai`) and the event stream re-framed as chunks
(:class:`AnthropicStreamToOpenAI`)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Final

import orjson

from ...errors import scrub
from ...usage import Usage
from .usage import (
    JSON,
    _cache_writes,
    _int,
    _openai_usage_dict,
    _thinking,
    usage_from_anthropic,
)

_dumps = orjson.dumps

_FINISH_REASONS: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def recorded_finish_reason(stop_reason: Any) -> str:
    """An Anthropic ``stop_reason`` as the usage event records it: in OpenAI's words by the
    table the chat translation uses, so one column reads the same for every provider; a word
    the table does not know is kept as Anthropic said it (rather than guessed to ``stop``);
    "" when there is none."""
    if not isinstance(stop_reason, str) or not stop_reason:
        return ""
    return _FINISH_REASONS.get(stop_reason, stop_reason[:32])


def anthropic_response_to_openai(
    resp: dict[str, Any], model: str, *, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``.

    Text blocks are concatenated; ``tool_use`` blocks become ``tool_calls`` (arguments are
    the JSON of ``input``); thinking and server-tool blocks are not represented in the
    OpenAI shape and are left out. ``pause_turn`` maps to ``stop`` and
    ``model_context_window_exceeded`` to ``length``."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id") or f"call_{len(tool_calls)}",
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": _dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    out: JSON = {
        "id": f"chatcmpl-{resp.get('id') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(resp.get("stop_reason")),
            }
        ],
    }
    usage = resp.get("usage")
    if isinstance(usage, dict):
        out["usage"] = _openai_usage_dict(usage_from_anthropic(usage))
    return out


def _openai_error_type(anthropic_type: Any) -> str:
    if anthropic_type == "rate_limit_error":
        return "rate_limit_error"
    if anthropic_type == "invalid_request_error":
        return "invalid_request_error"
    return "upstream_error"


class AnthropicStreamToOpenAI:
    """Anthropic stream events -> OpenAI ``chat.completion.chunk`` SSE frames.

    Feed it every parsed event (``feed(event_name, data)``); each call returns the complete
    frames to send. Anthropic block indexes are mapped to OpenAI ``tool_calls[].index`` in
    order of appearance (text blocks do not count). Thinking, citation and server-tool
    events have no OpenAI counterpart and are skipped.

    :attr:`usage` is exact once ``message_delta`` arrived (its ``output_tokens`` is the
    cumulative figure and replaces ``message_start``'s, never adds to it; input figures in
    it, when present, are cumulative too). Before that, a cut-off stream still yields the
    prompt from ``message_start`` with the larger of its ``output_tokens`` and the number of
    content chunks sent, marked ``estimated``.
    """

    __slots__ = (
        "_cache_read",
        "_cache_write",
        "_cache_write_1h",
        "_created",
        "_finish_sent",
        "_finished",
        "_have_input",
        "_id",
        "_include_usage",
        "_input",
        "_model",
        "_output",
        "_prefix",
        "_reasoning",
        "_start_output",
        "_started",
        "_tool_index",
        "chunks",
        "failed",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        *,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = completion_id
        self._created = created if created is not None else int(time.time())
        self._prefix: bytes | None = None
        self._started = False
        self._finish_sent = False
        self._finished = False
        self._tool_index: dict[int, int] = {}
        self._input = 0
        self._cache_read = 0
        self._cache_write = 0
        self._cache_write_1h = 0
        self._reasoning = 0
        self._have_input = False
        self._start_output = 0
        self._output: int | None = None
        #: content frames sent (text and tool-argument deltas), for estimates.
        self.chunks = 0
        #: an ``error`` event arrived; nothing more is sent.
        self.failed = False

    @property
    def finished(self) -> bool:
        """``message_stop`` arrived and ``[DONE]`` was sent."""
        return self._finished

    @property
    def usage(self) -> Usage | None:
        if self._output is None and not self._have_input:
            return None
        prompt = self._input + self._cache_read + self._cache_write + self._cache_write_1h
        if self._output is not None:
            output, estimated = self._output, not self._have_input
        else:
            output, estimated = max(self._start_output, self.chunks), True
        return Usage(
            prompt,
            output,
            self._cache_read,
            estimated=estimated,
            cache_write_tokens=self._cache_write,
            cache_write_1h_tokens=self._cache_write_1h,
            reasoning_tokens=self._reasoning,
        )

    def _envelope(self) -> bytes:
        if self._id is None:
            self._id = f"chatcmpl-{uuid.uuid4().hex}"
        return (
            b'{"id":'
            + _dumps(self._id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _dumps(self._model)
        )

    def _frame(self, delta: JSON, finish: str | None = None) -> bytes:
        # Every chunk shares its envelope: serialise it once, splice each delta in.
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = (
                b"data: " + self._envelope() + b',"choices":[{"index":0,"delta":'
            )
        return (
            prefix
            + _dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + (b"null" if finish is None else _dumps(finish))
            + b"}]}\n\n"
        )

    def _start(self) -> bytes:
        """The first chunk, as OpenAI sends it: the role and an empty content."""
        self._started = True
        return self._frame({"role": "assistant", "content": ""})

    def _read_usage(self, usage: Any, *, final: bool) -> None:
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage and usage["input_tokens"] is not None:
            self._input = _int(usage["input_tokens"])
            self._have_input = True
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = _int(usage["cache_read_input_tokens"])
        writes = _cache_writes(usage)
        if writes is not None:
            self._cache_write, self._cache_write_1h = writes
        thinking = _thinking(usage)
        if thinking is not None:
            self._reasoning = thinking
        if "output_tokens" in usage:
            if final:
                self._output = _int(usage["output_tokens"])
            else:
                self._start_output = _int(usage["output_tokens"])

    def feed(self, event: str, data: dict[str, Any]) -> list[bytes]:
        """Translate one upstream event (``event`` may be ``""``: ``data["type"]`` is used)."""
        if self._finished or self.failed:
            return []
        kind = event or data.get("type") or ""
        if kind == "content_block_delta":  # the hot path
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if not text:
                    return []
                frame = self._frame({"content": text})
            elif dtype == "input_json_delta":
                partial = delta.get("partial_json")
                index = self._tool_index.get(data.get("index", -1))
                if not partial or index is None:
                    return []
                frame = self._frame(
                    {"tool_calls": [{"index": index, "function": {"arguments": partial}}]}
                )
            else:
                return []  # thinking, signature, citations: nothing to say in OpenAI's shape
            self.chunks += 1
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_start":
            message = data.get("message") or {}
            if self._id is None and isinstance(message.get("id"), str):
                self._id = f"chatcmpl-{message['id']}"
            self._read_usage(message.get("usage"), final=False)
            return [] if self._started else [self._start()]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                index = len(self._tool_index)
                self._tool_index[_int(data.get("index"))] = index
                call = {
                    "index": index,
                    "id": block.get("id") or f"call_{index}",
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""},
                }
                frame = self._frame({"tool_calls": [call]})
            elif btype == "text" and block.get("text"):
                self.chunks += 1
                frame = self._frame({"content": block["text"]})
            else:
                return []
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_delta":
            self._read_usage(data.get("usage"), final=True)
            if self._finish_sent:
                return []
            self._finish_sent = True
            reason = _finish_reason((data.get("delta") or {}).get("stop_reason"))
            frame = self._frame({}, reason)
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_stop":
            out = [] if self._started else [self._start()]
            if not self._finish_sent:
                self._finish_sent = True
                out.append(self._frame({}, "stop"))
            usage = self.usage
            if self._include_usage and usage is not None:
                head = self._envelope() + b',"choices":[],"usage":'
                out.append(b"data: " + head + _dumps(_openai_usage_dict(usage)) + b"}\n\n")
            out.append(b"data: [DONE]\n\n")
            self._finished = True
            return out
        if kind == "error":
            self.failed = True
            error = data.get("error")
            if not isinstance(error, dict):
                error = {}
            message = error.get("message")
            etype = error.get("type")
            body = {
                "error": {
                    "message": scrub(message) if isinstance(message, str) else "Upstream error.",
                    "type": _openai_error_type(etype),
                    "param": None,
                    "code": etype if isinstance(etype, str) else None,
                }
            }
            return [b"data: " + _dumps(body) + b"\n\n"]
        return []  # ping, content_block_stop and event types added after this was written
