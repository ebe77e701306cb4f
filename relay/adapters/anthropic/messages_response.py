"""An OpenAI-compatible upstream's answer for an Anthropic Messages client: the whole
completion (:func:`openai_response_to_anthropic`) and the chunk stream re-framed as Anthropic
events (:class:`OpenAIStreamToAnthropic`)."""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson

from ...errors import scrub
from ...usage import Usage
from ..openai import usage_of as _openai_usage_of
from .errors import AnthropicError
from .usage import JSON, _anthropic_usage_dict, _is_int

_dumps = orjson.dumps

_STOP_REASONS: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Parsed tool arguments; anything that is not a JSON object is kept as ``{"_raw": ...}``
    because Anthropic's ``input`` must be an object and the client should see what came."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _message_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def openai_response_to_anthropic(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``.

    ``content_filter`` maps to ``refusal`` (as does a ``refusal`` text, which becomes a
    text block); a ``stop`` that nevertheless carries tool calls (some compatible servers
    do that) maps to ``tool_use``. ``stop_sequence`` is always null: OpenAI does not say
    which stop string matched. Reasoning text some upstreams add is not carried."""
    message_id = _message_id(resp.get("id"))
    content: list[JSON] = []
    finish: Any = None
    refused = False
    choices = resp.get("choices")
    if isinstance(choices, list) and choices:
        choice = choices[0]
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        text = message.get("content")
        if isinstance(text, list):  # a few compatible servers answer with parts
            text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            refused = True
            text = f"{text}{refusal}" if isinstance(text, str) else refusal
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
        for k, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{message_id[4:]}_{k}",
                    "name": fn.get("name") or "",
                    "input": _tool_input(fn.get("arguments")),
                }
            )
    has_tools = any(block["type"] == "tool_use" for block in content)
    stop_reason = _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if refused:
        stop_reason = "refusal"
    elif has_tools and stop_reason == "end_turn":
        stop_reason = "tool_use"
    usage = _openai_usage_of(resp) or Usage(0, 0)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage_dict(usage),
    }


# --------------------------------------------------------------------------------------------
# The stream: OpenAI chunks -> Anthropic events
# --------------------------------------------------------------------------------------------


def _event(name: bytes, payload: JSON) -> bytes:
    return b"event: " + name + b"\ndata: " + _dumps(payload) + b"\n\n"


class _ToolCall:
    __slots__ = ("args", "block", "closed", "complete", "id", "name")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.args = ""  # every fragment received
        self.block: int | None = None  # Anthropic block index once started
        self.closed = False
        self.complete = False


_TEXT: Final = 1
_TOOL: Final = 2


class OpenAIStreamToAnthropic:
    """OpenAI ``chat.completion.chunk`` dicts -> Anthropic SSE frames (``event:`` + ``data:``).

    ``message_start`` goes out with the first chunk, with zero usage as a placeholder:
    OpenAI reports usage only at the end, so the real figures (``input_tokens``, cache reads,
    ``output_tokens``) travel in ``message_delta``'s usage, which the Anthropic SDKs take as
    cumulative totals. ``message_delta``/``message_stop`` are sent as soon as usage arrives
    with or after the finish reason, or else by :meth:`finish` at ``[DONE]`` / end of
    stream (then without upstream usage, ``output_tokens`` is the chunk count, an estimate).

    Anthropic blocks are strictly sequential (start, deltas, stop), while OpenAI tool-call
    fragments are keyed by index and may interleave. A tool call streams live while it is
    the open block; a new call (or text) replaces the open call only once the open call's
    arguments parse as a complete JSON object, otherwise it is buffered and sent whole when
    that becomes true or at the end. So interleaved parallel calls arrive intact, just later.
    """

    __slots__ = (
        "_active",
        "_active_block",
        "_active_tool",
        "_finished",
        "_id",
        "_model",
        "_next_block",
        "_pending_text",
        "_queued",
        "_refused",
        "_started",
        "_stop_reason",
        "_tools",
        "_usage",
        "chunks",
        "failed",
    )

    def __init__(self, model: str, message_id: str) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._finished = False
        self._active = 0  # 0: no open block, _TEXT or _TOOL
        self._active_block = -1
        self._active_tool: _ToolCall | None = None
        self._next_block = 0
        self._tools: dict[int, _ToolCall] = {}
        self._queued: list[_ToolCall] = []
        self._pending_text: list[str] = []
        self._stop_reason: str | None = None
        self._refused = False
        self._usage: Usage | None = None
        #: content fragments received (text and tool-argument pieces), for estimates.
        self.chunks = 0
        #: the upstream sent an error chunk; an ``error`` event went out, nothing more will.
        self.failed = False

    @property
    def finished(self) -> bool:
        """``message_stop`` was sent."""
        return self._finished

    @property
    def usage(self) -> Usage | None:
        """The upstream's usage, or None if it sent none (the relay then estimates)."""
        return self._usage

    def _message_start(self) -> bytes:
        self._started = True
        return _event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self._id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 0,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 0,
                    },
                },
            },
        )

    # -- blocks ------------------------------------------------------------------------------

    def _close(self, out: list[bytes]) -> None:
        if not self._active:
            return
        out.append(
            _event(
                b"content_block_stop", {"type": "content_block_stop", "index": self._active_block}
            )
        )
        if self._active_tool is not None:
            self._active_tool.closed = True
            self._active_tool = None
        self._active = 0

    def _open_text(self, out: list[bytes]) -> None:
        self._close(out)
        index = self._active_block = self._next_block
        self._next_block += 1
        self._active = _TEXT
        out.append(
            _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )

    def _text_delta(self, text: str) -> bytes:
        return _event(
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._active_block,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    def _open_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        self._close(out)
        index = self._active_block = call.block = self._next_block
        self._next_block += 1
        self._active = _TOOL
        self._active_tool = call
        out.append(
            _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": {},
                    },
                },
            )
        )
        if call.args:
            out.append(self._json_delta(call.args))

    def _json_delta(self, fragment: str) -> bytes:
        return _event(
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._active_block,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            },
        )

    def _active_tool_done(self) -> bool:
        """Whether the open tool call's arguments already form a complete JSON object."""
        call = self._active_tool
        if call is None:
            return True
        if not call.complete and call.args:
            try:
                call.complete = isinstance(orjson.loads(call.args), dict)
            except orjson.JSONDecodeError:
                return False
        return call.complete

    def _on_text(self, text: str, out: list[bytes]) -> None:
        self.chunks += 1
        if self._active == _TEXT:
            out.append(self._text_delta(text))
        elif self._active == _TOOL and not self._active_tool_done():
            self._pending_text.append(text)
        else:
            self._open_text(out)
            out.append(self._text_delta(text))

    def _on_tool(self, tc: JSON, out: list[bytes]) -> None:
        fn = tc.get("function") or {}
        fragment = fn.get("arguments") or ""
        raw_index = tc.get("index")
        if _is_int(raw_index):
            index = raw_index
        else:
            # A few servers omit the index: a new id means a new call, else the last one.
            new = tc.get("id") and all(c.id != tc["id"] for c in self._tools.values())
            index = len(self._tools) if new or not self._tools else max(self._tools)
        call = self._tools.get(index)
        if fragment:
            self.chunks += 1
        if call is None:
            raw_id = tc.get("id")
            call = _ToolCall(
                raw_id if isinstance(raw_id, str) and raw_id else f"toolu_{self._id}_{index}",
                str(fn.get("name") or ""),
            )
            call.args = fragment
            self._tools[index] = call
            if self._active == _TOOL and not self._active_tool_done():
                self._queued.append(call)
            else:
                self._open_tool(call, out)
            return
        if not call.name and fn.get("name"):
            call.name = str(fn["name"])  # only matters while still queued
        if not fragment:
            return
        if call is self._active_tool:
            call.args += fragment
            out.append(self._json_delta(fragment))
        elif call.block is None:
            call.args += fragment
            if self._active_tool_done():
                self._queued.remove(call)
                self._open_tool(call, out)
        # else: a fragment after the call's arguments were complete and its block closed;
        # nothing valid can follow a complete JSON object, so it is dropped.

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._finished or self.failed:
            return []
        out: list[bytes] = [] if self._started else [self._message_start()]
        error = chunk.get("error")
        if error:
            self.failed = True
            message = error.get("message") if isinstance(error, dict) else error
            text = scrub(message) if isinstance(message, str) and message else "Upstream error."
            out.append(AnthropicError(502, "api_error", text).sse())
            return out
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content and isinstance(content, str):
                    self._on_text(content, out)
                refusal = delta.get("refusal")
                if refusal and isinstance(refusal, str):
                    self._refused = True
                    self._on_text(refusal, out)
                calls = delta.get("tool_calls")
                if calls:
                    for tc in calls:
                        if isinstance(tc, dict):
                            self._on_tool(tc, out)
            finish = choice.get("finish_reason")
            if finish:
                self._stop_reason = _STOP_REASONS.get(finish, "end_turn")
        if chunk.get("usage"):
            usage = _openai_usage_of(chunk)
            if usage is not None:
                self._usage = usage
                # Usage in or after the finish chunk is final. Servers that put a running
                # total on every chunk (vLLM's continuous usage) are closed by finish().
                if self._stop_reason is not None:
                    self._end(out)
        return out

    def finish(self) -> list[bytes]:
        """Close the message at ``[DONE]`` or end of stream (idempotent; after an error
        event it sends nothing)."""
        if self._finished or self.failed:
            return []
        out: list[bytes] = [] if self._started else [self._message_start()]
        self._end(out)
        return out

    def _end(self, out: list[bytes]) -> None:
        self._close(out)
        for call in self._queued:
            self._open_tool(call, out)
            self._close(out)
        self._queued.clear()
        if self._pending_text:
            self._open_text(out)
            out.append(self._text_delta("".join(self._pending_text)))
            self._close(out)
            self._pending_text.clear()
        stop_reason = self._stop_reason or "end_turn"
        if self._refused:
            stop_reason = "refusal"
        elif self._tools and stop_reason == "end_turn":
            stop_reason = "tool_use"
        usage: JSON = (
            _anthropic_usage_dict(self._usage)
            if self._usage is not None
            else {"output_tokens": self.chunks}
        )
        out.append(
            _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_event(b"message_stop", {"type": "message_stop"}))
        self._finished = True
