"""How one request is put to one upstream and how its answer comes back to the client.

An exchange pairs the client's API (OpenAI chat, embeddings and text completions, Anthropic
Messages, Responses) with the route's upstream shape; it builds the upstream request and
converts the answer — whole or streamed — while reading the usage the bill is made from.
"""

from __future__ import annotations

from typing import Any

import orjson

from .adapters import anthropic, completions, quirks, responses
from .adapters import openai as openai_adapter
from .errors import RelayError
from .exchange_types import Exchange, StreamTranslator, json_object
from .sse import SSEParser
from .usage import Usage


def _finishes(choices: Any) -> bool:
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


class OpenAIPassthrough:
    """An OpenAI-compatible stream passed through event by event (framed by
    :class:`~relay.sse.SSEParser`, so with ``\\n`` line ends). The upstream is always asked for
    usage; the usage-only chunk is dropped when the client did not ask for it. With
    ``reframe`` (an upstream that takes no ``stream_options`` and puts its usage on its last
    chunk, as Mistral does) that usage is moved to a chunk of its own, or dropped, the same
    way."""

    __slots__ = ("chunks", "finish_reason", "finished", "parser", "reframe", "usage", "wants_usage")

    def __init__(self, wants_usage: bool, *, reframe: bool = False) -> None:
        self.wants_usage = wants_usage
        self.reframe = reframe
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.finish_reason = ""
        self.parser = SSEParser()

    def feed(self, data: bytes) -> bytes:
        events = self.parser.blocks(data)
        if not events:
            return b""
        out = []
        for event in events:
            if not event:
                continue
            if event.startswith(b"data: [DONE]"):
                self.finished = True
                out.append(event)
                continue
            reason = openai_adapter.finish_reason_in(event)
            if reason:
                self.finish_reason = reason
            if b'"usage":{' in event or b'"usage": {' in event:
                start = event.find(b"{")
                try:
                    payload = orjson.loads(event[start:])
                except orjson.JSONDecodeError:
                    payload = {}
                self.usage = openai_adapter.usage_of(payload) or self.usage
                if not self.wants_usage and not payload.get("choices"):
                    continue  # the usage-only chunk the client did not ask for
                choices = payload.get("choices")
                if choices:
                    self.chunks += 1
                    if self.reframe and _finishes(choices):
                        # Usage on the last chunk, framed as OpenAI frames it: on a chunk
                        # of its own, and only when asked for.
                        usage = payload.pop("usage", None)
                        if self.wants_usage:
                            out.append(b"data: " + orjson.dumps({**payload, "usage": None}))
                            payload = {**payload, "choices": [], "usage": usage}
                        out.append(b"data: " + orjson.dumps(payload))
                        continue
            else:
                self.chunks += 1
            out.append(event)
        if not out:
            return b""
        out.append(b"")
        return b"\n\n".join(out)

    def cut(self) -> bytes:
        return b""

    def close(self) -> bytes:
        rest = self.parser.rest()
        return rest if rest.strip() else b""


class OpenAIToOpenAI:
    """The client and the upstream both speak OpenAI: the body goes through with the upstream's
    model name, the answer comes back byte for byte."""

    def __init__(
        self, api: str, body: dict[str, Any], route: dict[str, Any], *, stream: bool
    ) -> None:
        path = {"chat": "chat/completions", "completions": "completions"}.get(api, "embeddings")
        self.url = f"{route['base_url']}/{path}"
        self.headers = openai_adapter.headers(route["api_key"])
        rules = quirks.of_route(route)
        self.body = openai_adapter.request_body(
            body,
            route["upstream_model"],
            stream=stream,
            rules=rules,
            completions=api == "completions",
        )
        self.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.reframe = not rules.stream_options
        self.finish_reason = ""

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RelayError(
                502, "The upstream sent an invalid response.", type="upstream_error"
            ) from None
        if not isinstance(payload, dict):
            return raw, None
        self.finish_reason = openai_adapter.finish_reason_of(payload)
        return raw, openai_adapter.usage_of(payload)

    def translator(self) -> StreamTranslator:
        return OpenAIPassthrough(self.wants_usage, reframe=self.reframe)


ANTHROPIC_VERSION = "2023-06-01"


def _anthropic_headers(api_key: str) -> dict[str, str]:
    return {
        "x-api-key": api_key,
        "anthropic-version": ANTHROPIC_VERSION,
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }


class AnthropicEventsToOpenAI:
    """An Anthropic upstream's event stream, re-framed as OpenAI chunks for the client."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.parser = SSEParser()
        self.stream = anthropic.AnthropicStreamToOpenAI(model, include_usage)
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.finish_reason = ""

    def feed(self, data: bytes) -> bytes:
        return self._convert(self.parser.feed(data))

    def cut(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return self._convert(self.parser.flush())

    def _convert(self, events: list[tuple[str, bytes]]) -> bytes:
        out: list[bytes] = []
        for name, payload in events:
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                kind = name or str(data.get("type", ""))
                if kind == "message_delta":
                    delta = data.get("delta")
                    if isinstance(delta, dict) and delta.get("stop_reason"):
                        self.finish_reason = anthropic.recorded_finish_reason(delta["stop_reason"])
                out.extend(self.stream.feed(kind, data))
        self.usage = self.stream.usage
        self.finished = self.stream.finished
        self.chunks = self.stream.chunks
        return b"".join(out)


class OpenAIToAnthropic:
    """An OpenAI client, an Anthropic upstream."""

    def __init__(
        self, body: dict[str, Any], route: dict[str, Any], *, stream: bool, max_output: int
    ) -> None:
        self.url = f"{route['base_url']}/messages"
        self.headers = _anthropic_headers(route["api_key"])
        converted = anthropic.openai_request_to_anthropic(
            body, route["upstream_model"], default_max_tokens=max_output
        )
        self.body = orjson.dumps(converted)
        self.model = str(body["model"])
        self.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.finish_reason = ""

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        payload = json_object(raw)
        self.finish_reason = anthropic.recorded_finish_reason(payload.get("stop_reason"))
        usage = payload.get("usage")
        converted = anthropic.anthropic_response_to_openai(payload, self.model)
        return orjson.dumps(converted), (
            anthropic.usage_from_anthropic(usage) if isinstance(usage, dict) else None
        )

    def translator(self) -> StreamTranslator:
        return AnthropicEventsToOpenAI(self.model, self.wants_usage)


class OpenAIChunksToAnthropic:
    """An OpenAI-compatible upstream's chunks, re-framed as Anthropic events for the client."""

    def __init__(self, model: str, message_id: str) -> None:
        self.parser = SSEParser()
        self.stream = anthropic.OpenAIStreamToAnthropic(model, message_id)
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.finish_reason = ""

    def feed(self, data: bytes) -> bytes:
        return self._convert(self.parser.feed(data), final=False)

    def cut(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return self._convert(self.parser.flush(), final=True)

    def _convert(self, events: list[tuple[str, bytes]], *, final: bool) -> bytes:
        out: list[bytes] = []
        for _, payload in events:
            if payload.strip() == b"[DONE]":
                out.extend(self.stream.finish())
                self.finished = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                usage = openai_adapter.usage_of(chunk)
                if usage is not None:
                    self.usage = usage
                reason = openai_adapter.finish_reason_of(chunk)
                if reason:
                    self.finish_reason = reason
                out.extend(self.stream.feed(chunk))
        if final:
            out.extend(self.stream.finish())
        self.chunks = self.stream.chunks
        return b"".join(out)


class AnthropicToOpenAI:
    """An Anthropic Messages client (``POST /v1/messages``), an OpenAI-compatible upstream."""

    def __init__(
        self, body: dict[str, Any], route: dict[str, Any], *, stream: bool, request_id: str
    ) -> None:
        self.url = f"{route['base_url']}/chat/completions"
        self.headers = openai_adapter.headers(route["api_key"])
        converted = anthropic.anthropic_request_to_openai(body, route["upstream_model"])
        rules = quirks.of_route(route)
        refused = rules.refusal(converted, str(body["model"]))
        if refused is not None:
            raise refused
        self.body = openai_adapter.request_body(
            converted, route["upstream_model"], stream=stream, rules=rules
        )
        self.model = str(body["model"])
        self.message_id = "msg_" + request_id.removeprefix("req_")
        self.finish_reason = ""

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        payload = json_object(raw)
        self.finish_reason = openai_adapter.finish_reason_of(payload)
        converted = anthropic.openai_response_to_anthropic(payload, self.model)
        return orjson.dumps(converted), openai_adapter.usage_of(payload)

    def translator(self) -> StreamTranslator:
        return OpenAIChunksToAnthropic(self.model, self.message_id)


class AnthropicPassthrough:
    """An Anthropic stream passed through unchanged while its usage is read."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.finish_reason = ""

    def feed(self, data: bytes) -> bytes:
        self._read(self.parser.feed(data))
        return data

    def cut(self) -> bytes:
        return b""

    def close(self) -> bytes:
        self._read(self.parser.flush())
        return b""

    def _read(self, events: list[tuple[str, bytes]]) -> None:
        for name, payload in events:
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            kind = name or str(data.get("type", ""))
            self.usage = anthropic.anthropic_passthrough_usage(kind, data, self.usage)
            if kind == "content_block_delta":
                self.chunks += 1
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason"):
                    self.finish_reason = anthropic.recorded_finish_reason(delta["stop_reason"])
            elif kind == "message_stop":
                self.finished = True


class AnthropicToAnthropic:
    """Both sides speak Anthropic Messages: the body goes through with the upstream's model."""

    def __init__(self, body: dict[str, Any], route: dict[str, Any]) -> None:
        self.url = f"{route['base_url']}/messages"
        self.headers = _anthropic_headers(route["api_key"])
        self.body = orjson.dumps({**body, "model": route["upstream_model"]})
        self.finish_reason = ""

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        payload = json_object(raw)
        self.finish_reason = anthropic.recorded_finish_reason(payload.get("stop_reason"))
        usage = payload.get("usage")
        return raw, anthropic.usage_from_anthropic(usage) if isinstance(usage, dict) else None

    def translator(self) -> StreamTranslator:
        return AnthropicPassthrough()


class ChatChunksToResponses:
    """The chat stream of the exchange underneath (passed through or translated from
    Anthropic's events), re-framed as the Responses API's typed events. Usage and the chunk
    count are the underlying exchange's: a Responses stream is billed as the chat stream is."""

    def __init__(self, inner: StreamTranslator, stream: responses.ChatStreamToResponses) -> None:
        self.inner = inner
        self.stream = stream
        self.parser = SSEParser()
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0

    @property
    def finish_reason(self) -> str:
        return self.inner.finish_reason

    def feed(self, data: bytes) -> bytes:
        return self._convert(self.parser.feed(self.inner.feed(data)))

    def close(self) -> bytes:
        out = self._convert(self.parser.feed(self.inner.close()) + self.parser.flush())
        if not self.stream.ended:
            # Without [DONE]: whole if the finish reason came, else cut short.
            ending = (
                self.stream.complete(self.usage)
                if self.stream.has_finish
                else self.stream.fail("The upstream ended the stream early.")
            )
            out += b"".join(ending)
            self.finished = self.stream.finished
        return out

    def cut(self) -> bytes:
        return b"".join(self.stream.fail("The upstream failed mid-answer."))

    def _convert(self, events: list[tuple[str, bytes]]) -> bytes:
        out: list[bytes] = []
        self.usage = self.inner.usage
        for _, payload in events:
            if payload.strip() == b"[DONE]":
                out.extend(self.stream.complete(self.usage))
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                out.extend(self.stream.feed(chunk))
        self.finished = self.stream.finished
        self.chunks = self.inner.chunks
        return b"".join(out)


class ResponsesToChat:
    """A Responses client (``POST /v1/responses``): its request, translated to chat before the
    relay chose routes and held money (:func:`~relay.adapters.responses.request.\
    responses_request_to_chat`), goes through the route's chat exchange; the answer comes back
    as a ``response``."""

    def __init__(self, inner: Exchange, request: dict[str, Any], request_id: str) -> None:
        self.inner = inner
        self.url = inner.url
        self.headers = inner.headers  # the same dict: headers added for demo routes reach it
        self.body = inner.body
        self.request = request
        self.model = str(request["model"])
        self.response_id = "resp_" + request_id.removeprefix("req_")

    @property
    def finish_reason(self) -> str:
        return self.inner.finish_reason

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        body, usage = self.inner.response(raw)
        converted = responses.chat_response_to_responses(
            json_object(body), usage, self.request, self.response_id, self.model
        )
        return orjson.dumps(converted), usage

    def translator(self) -> StreamTranslator:
        return ChatChunksToResponses(
            self.inner.translator(),
            responses.ChatStreamToResponses(self.request, self.response_id, self.model),
        )


class FimChunksToCompletions:
    """A Mistral FIM stream (chat completion chunks), re-framed as ``text_completion``
    chunks."""

    def __init__(self, stream: completions.FimStreamToCompletions) -> None:
        self.parser = SSEParser()
        self.stream = stream
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.finish_reason = ""

    def feed(self, data: bytes) -> bytes:
        return self._convert(self.parser.feed(data))

    def cut(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return self._convert(self.parser.flush())

    def _convert(self, events: list[tuple[str, bytes]]) -> bytes:
        out: list[bytes] = []
        for _, payload in events:
            if payload.strip() == b"[DONE]":
                out.extend(self.stream.done())
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                reason = openai_adapter.finish_reason_of(chunk)
                if reason:
                    self.finish_reason = completions.FINISH_REASONS.get(reason, reason)
                out.extend(self.stream.feed(chunk))
        self.usage = self.stream.usage
        self.finished = self.stream.finished
        self.chunks = self.stream.chunks
        return b"".join(out)


class CompletionsToFim:
    """A text-completions client (``POST /v1/completions``), Mistral's fill-in-the-middle
    upstream (``/fim/completions``, Codestral)."""

    def __init__(
        self, body: dict[str, Any], route: dict[str, Any], *, stream: bool, request_id: str
    ) -> None:
        self.url = f"{route['base_url']}/fim/completions"
        self.headers = openai_adapter.headers(route["api_key"])
        converted = completions.fim_request(
            body, route["upstream_model"], stream=stream, rules=quirks.of_route(route)
        )
        self.body = orjson.dumps(converted)
        self.model = str(body["model"])
        self.completion_id = "cmpl-" + request_id.removeprefix("req_")
        self.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.finish_reason = ""

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        payload = json_object(raw)
        reason = openai_adapter.finish_reason_of(payload)
        self.finish_reason = completions.FINISH_REASONS.get(reason, reason)
        converted = completions.fim_response_to_completion(payload, self.model, self.completion_id)
        return orjson.dumps(converted), openai_adapter.usage_of(payload)

    def translator(self) -> StreamTranslator:
        return FimChunksToCompletions(
            completions.FimStreamToCompletions(self.model, self.completion_id, self.wants_usage)
        )


def make_exchange(
    api: str,
    body: dict[str, Any],
    route: dict[str, Any],
    *,
    stream: bool,
    max_output: int,
    request_id: str,
    original: dict[str, Any] | None = None,
) -> Exchange:
    """The exchange for the client's API (``chat``, ``embeddings``, ``completions``,
    ``messages``, ``responses``) and the route's upstream shape (``openai``, ``anthropic``;
    for ``completions``, the route's ``completions_api``). For
    ``responses``, ``body`` is the request already translated to chat and ``original`` the
    client's own."""
    if api == "responses":
        inner = make_exchange(
            "chat", body, route, stream=stream, max_output=max_output, request_id=request_id
        )
        return ResponsesToChat(inner, original or body, request_id)
    if api == "completions":
        served = quirks.of_route(route).completions
        if served == "fim":
            return CompletionsToFim(body, route, stream=stream, request_id=request_id)
        if served == "openai" and route.get("shape", "openai") == "openai":
            return OpenAIToOpenAI(api, body, route, stream=stream)
        raise RelayError(
            400,
            "This model's provider offers no text completions.",
            param="model",
            code="unsupported_endpoint",
        )
    shape = route.get("shape", "openai")
    if shape == "openai":
        if api == "messages":
            return AnthropicToOpenAI(body, route, stream=stream, request_id=request_id)
        return OpenAIToOpenAI(api, body, route, stream=stream)
    if shape == "anthropic":
        if api == "messages":
            return AnthropicToAnthropic(body, route)
        if api == "chat":
            return OpenAIToAnthropic(body, route, stream=stream, max_output=max_output)
        raise RelayError(
            400, "This model's provider offers no embeddings.", param="model", code="unsupported"
        )
    raise RelayError(500, f"No adapter for upstream shape {shape!r}.", type="server_error")
