"""A chat completion as a Responses API ``response``: whole (:func:`chat_response_to_responses`)
and streamed (:class:`ChatStreamToResponses`: chat chunks in, the typed Responses events out,
each with its ``sequence_number``).

The shapes follow the openai SDK's own types (``openai.types.responses``), which the tests
parse every answer with. The usage comes from :class:`relay.usage.Usage`, the figures the bill
is made from, so what the client reads and what it pays for cannot differ.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from ...errors import scrub
from ...usage import Usage

JSON = dict[str, Any]

_dumps = orjson.dumps

# A chat finish reason that is not a completion -> Responses' incomplete_details.reason.
_INCOMPLETE: Final[dict[str, str]] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def usage_dict(usage: Usage | None) -> JSON:
    """Our usage in the Responses shape: input and output counted whole, as chat counts
    prompt and completion; cache reads and writes, and reasoning, as their parts."""
    u = usage or Usage(0, 0)
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens + u.cache_write_1h_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _echo_tool(tool: Any) -> JSON:
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def skeleton(request: JSON, response_id: str, model: str, created: int) -> JSON:
    """The response before any output: what the request asked for, echoed as OpenAI echoes
    it (``store`` is always false: nothing is kept)."""
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    reasoning = request.get("reasoning")
    tools = request.get("tools")
    parallel = request.get("parallel_tool_calls")
    metadata = request.get("metadata")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "model": model,
        "output": [],
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "previous_response_id": None,
        "reasoning": (
            {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if isinstance(reasoning, dict)
            else None
        ),
        "store": False,
        "temperature": request.get("temperature"),
        "text": {"format": fmt if isinstance(fmt, dict) else {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in tools if isinstance(t, dict)]
        if isinstance(tools, list)
        else [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
    }


def _text_part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_of(message: JSON) -> str:
    """Reasoning text some upstreams return beside the answer: DeepSeek's and vLLM's
    ``reasoning_content``, OpenRouter's ``reasoning``."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _ending(finish: Any) -> tuple[str, JSON | None]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def chat_response_to_responses(
    chat: JSON, usage: Usage | None, request: JSON, response_id: str, model: str
) -> JSON:
    """An OpenAI ``chat.completion`` as a Responses ``response``: a reasoning item where the
    upstream returned reasoning text, a message with the text (and any refusal), then one
    ``function_call`` item per tool call. A ``length`` finish is ``incomplete`` with
    ``max_output_tokens`` as its reason."""
    created = chat.get("created")
    out = skeleton(
        request, response_id, model, created if isinstance(created, int) else int(time.time())
    )
    suffix = response_id.removeprefix("resp_")
    items: list[JSON] = []
    finish: Any = None
    choices = chat.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        status, _ = _ending(finish)
        reasoning = _reasoning_of(message)
        if reasoning:
            items.append(
                {
                    "type": "reasoning",
                    "id": f"rs_{suffix}",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": reasoning}],
                    "status": "completed",
                }
            )
        parts: list[JSON] = []
        text = message.get("content")
        if isinstance(text, list):  # a few compatible servers answer with parts
            text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
        if isinstance(text, str) and text:
            parts.append(_text_part(text))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        if parts:
            items.append(
                {
                    "type": "message",
                    "id": f"msg_{suffix}",
                    "role": "assistant",
                    "status": status,
                    "content": parts,
                }
            )
        for k, call in enumerate(message.get("tool_calls") or ()):
            if not isinstance(call, dict):
                continue
            fn = call.get("function") or {}
            arguments = fn.get("arguments")
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{suffix}_{k}",
                    "call_id": call.get("id") or f"call_{suffix}_{k}",
                    "name": fn.get("name") or "",
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else _dumps(arguments or {}).decode(),
                    "status": "completed",
                }
            )
    status, details = _ending(finish)
    out.update(
        status=status,
        incomplete_details=details,
        output=items,
        usage=usage_dict(usage),
        completed_at=int(time.time()) if status == "completed" else None,
    )
    return out


# --------------------------------------------------------------------------------------------
# The stream: chat chunks -> Responses events
# --------------------------------------------------------------------------------------------


def _event(payload: JSON) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


class _Item:
    """One output item being streamed: a message or reasoning (parts of text), or a function
    call (its arguments)."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "part", "parts", "text")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.parts: list[JSON] = []  # the finished parts (message, reasoning)
        self.part = ""  # the open part's type ("" none)
        self.text = ""  # the open part's text, or a call's arguments
        self.call_id = ""
        self.name = ""

    def body(self, status: str) -> JSON:
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "id": self.id,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text,
                "status": status,
            }
        if self.kind == "reasoning":
            return {
                "type": "reasoning",
                "id": self.id,
                "summary": [],
                "content": list(self.parts),
                "status": status,
            }
        return {
            "type": "message",
            "id": self.id,
            "role": "assistant",
            "status": status,
            "content": list(self.parts),
        }


# The part types by what a chunk's delta carries, and the names of their events.
_PART: Final[dict[str, tuple[str, str]]] = {
    "output_text": ("response.output_text", "text"),
    "refusal": ("response.refusal", "refusal"),
    "reasoning_text": ("response.reasoning_text", "text"),
}


class ChatStreamToResponses:
    """OpenAI ``chat.completion.chunk`` dicts -> Responses SSE events (``event:`` + ``data:``).

    ``response.created`` and ``response.in_progress`` go out with the first chunk. Text and
    reasoning stream into one open item at a time (a message, a reasoning item); a tool call
    opens a ``function_call`` item of its own, which stays open while its arguments arrive
    (chat may interleave parallel calls; each event names its item, so nothing is buffered)
    and is closed at the end. :meth:`complete` (at ``[DONE]``, or at the end of a stream that
    had its finish reason) closes every item and sends ``response.completed`` (or
    ``response.incomplete`` for a ``length`` finish) with the usage; :meth:`fail` sends
    ``response.failed`` when the upstream errs or cuts the stream.
    """

    __slots__ = (
        "_calls",
        "_finish",
        "_items",
        "_open",
        "_response",
        "_seq",
        "_started",
        "ended",
        "failed",
        "finished",
    )

    def __init__(self, request: JSON, response_id: str, model: str) -> None:
        self._response = skeleton(request, response_id, model, int(time.time()))
        self._seq = 0
        self._started = False
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the open message or reasoning item
        self._calls: dict[int, _Item] = {}
        self._finish: Any = None
        #: ``response.completed`` or ``.incomplete`` was sent: the answer is whole.
        self.finished = False
        #: ``response.failed`` was sent.
        self.failed = False
        #: either: nothing more will be sent.
        self.ended = False

    @property
    def has_finish(self) -> bool:
        """The upstream sent its finish reason."""
        return self._finish is not None

    def _emit(self, out: list[bytes], payload: JSON) -> None:
        payload["sequence_number"] = self._seq
        self._seq += 1
        out.append(_event(payload))

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        self._emit(out, {"type": "response.created", "response": dict(self._response)})
        self._emit(out, {"type": "response.in_progress", "response": dict(self._response)})

    # -- items -------------------------------------------------------------------------------

    def _new(self, kind: str, prefix: str) -> _Item:
        index = len(self._items)
        suffix = self._response["id"].removeprefix("resp_")
        item = _Item(kind, f"{prefix}_{suffix}_{index}", index)
        self._items.append(item)
        return item

    def _added(self, item: _Item, out: list[bytes]) -> None:
        self._emit(
            out,
            {
                "type": "response.output_item.added",
                "output_index": item.index,
                "item": item.body("in_progress"),
            },
        )

    def _close_part(self, item: _Item, out: list[bytes]) -> None:
        if not item.part:
            return
        prefix, field = _PART[item.part]
        where = {"item_id": item.id, "output_index": item.index, "content_index": len(item.parts)}
        done: JSON = {"type": prefix + ".done", **where, field: item.text}
        if item.part == "output_text":
            done["logprobs"] = []
        self._emit(out, done)
        part: JSON = (
            _text_part(item.text)
            if item.part == "output_text"
            else {"type": item.part, field: item.text}
        )
        self._emit(out, {"type": "response.content_part.done", **where, "part": part})
        item.parts.append(part)
        item.part, item.text = "", ""

    def _close(self, item: _Item, status: str, out: list[bytes]) -> None:
        if item.kind == "function_call":
            self._emit(
                out,
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item.id,
                    "output_index": item.index,
                    "arguments": item.text,
                },
            )
        else:
            self._close_part(item, out)
        self._emit(
            out,
            {
                "type": "response.output_item.done",
                "output_index": item.index,
                "item": item.body(status),
            },
        )

    def _on_text(self, part: str, delta: str, out: list[bytes]) -> None:
        kind = "reasoning" if part == "reasoning_text" else "message"
        item = self._open
        if item is None or item.kind != kind:
            if item is not None:
                self._close(item, "completed", out)
            item = self._open = self._new(kind, "rs" if kind == "reasoning" else "msg")
            self._added(item, out)
        where = {"item_id": item.id, "output_index": item.index}
        if item.part != part:
            self._close_part(item, out)
            item.part = part
            empty: JSON = _text_part("") if part == "output_text" else {"type": part}
            empty.setdefault(_PART[part][1], "")
            self._emit(
                out,
                {
                    "type": "response.content_part.added",
                    **where,
                    "content_index": len(item.parts),
                    "part": empty,
                },
            )
        item.text += delta
        event: JSON = {
            "type": _PART[part][0] + ".delta",
            **where,
            "content_index": len(item.parts),
            "delta": delta,
        }
        if part == "output_text":
            event["logprobs"] = []
        self._emit(out, event)

    def _on_tool(self, tc: JSON, out: list[bytes]) -> None:
        fn = tc.get("function") or {}
        fragment = fn.get("arguments") or ""
        index = tc.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # A few servers omit the index: a new id means a new call, else the last one.
            new = tc.get("id") and all(c.call_id != tc["id"] for c in self._calls.values())
            index = len(self._calls) if new or not self._calls else max(self._calls)
        item = self._calls.get(index)
        if item is None:
            if self._open is not None:
                self._close(self._open, "completed", out)
                self._open = None
            item = self._calls[index] = self._new("function_call", "fc")
            raw_id = tc.get("id")
            item.call_id = raw_id if isinstance(raw_id, str) and raw_id else f"call_{item.id}"
            item.name = str(fn.get("name") or "")
            self._added(item, out)
        elif not item.name and fn.get("name"):
            item.name = str(fn["name"])
        if isinstance(fragment, str) and fragment:
            item.text += fragment
            self._emit(
                out,
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item.id,
                    "output_index": item.index,
                    "delta": fragment,
                },
            )

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, chunk: JSON) -> list[bytes]:
        if self.ended:
            return []
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            text = scrub(message) if isinstance(message, str) and message else "Upstream error."
            out.extend(self.fail(text))
            return out
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = _reasoning_of(delta)
                if reasoning:
                    self._on_text("reasoning_text", reasoning, out)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._on_text("output_text", content, out)
                refusal = delta.get("refusal")
                if isinstance(refusal, str) and refusal:
                    self._on_text("refusal", refusal, out)
                for tc in delta.get("tool_calls") or ():
                    if isinstance(tc, dict):
                        self._on_tool(tc, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _close_all(self, status: str, out: list[bytes]) -> None:
        for item in self._items:
            if item is self._open or item.kind == "function_call":
                self._close(item, status, out)
        self._open = None

    def complete(self, usage: Usage | None) -> list[bytes]:
        """The answer is whole: every item closed, then ``response.completed`` (or
        ``response.incomplete``) with the usage. Idempotent."""
        if self.ended:
            return []
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        status, details = _ending(self._finish)
        self._close_all("completed" if status == "completed" else "incomplete", out)
        response = self._response
        response.update(
            status=status,
            incomplete_details=details,
            output=[item.body("completed") for item in self._items],
            usage=usage_dict(usage),
            completed_at=int(time.time()) if status == "completed" else None,
        )
        if status != "completed":
            for item in response["output"]:
                if item["type"] == "message":
                    item["status"] = "incomplete"
        self._emit(out, {"type": f"response.{status}", "response": response})
        self.finished = self.ended = True
        return out

    def fail(self, message: str) -> list[bytes]:
        """The upstream failed mid-answer: open items closed as incomplete, then
        ``response.failed`` (without usage: the relay bills what was sent, estimated where
        the upstream gave no usage). Idempotent."""
        if self.ended:
            return []
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        self._close_all("incomplete", out)
        response = self._response
        response.update(
            status="failed",
            error={"code": "server_error", "message": message},
            output=[item.body("incomplete") for item in self._items],
        )
        self._emit(out, {"type": "response.failed", "response": response})
        self.failed = self.ended = True
        return out
