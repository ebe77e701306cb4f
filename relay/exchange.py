"""How one request is put to one upstream and how its answer comes back to the client.

An exchange pairs the client's API (OpenAI chat/embeddings today) with the route's upstream
shape; it builds the upstream request and converts the answer — whole or streamed — while
reading the usage the bill is made from.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from .adapters import openai as openai_adapter
from .errors import RelayError
from .usage import Usage


class StreamTranslator(Protocol):
    """Fed the upstream's bytes as they arrive; returns the bytes to send to the client."""

    usage: Usage | None
    finished: bool
    chunks: int

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class OpenAIPassthrough:
    """An OpenAI-compatible stream passed through event by event. The upstream is always asked
    for usage; the usage-only chunk is dropped when the client did not ask for it."""

    __slots__ = ("buffer", "chunks", "finished", "usage", "wants_usage")

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
                    continue  # the usage-only chunk the client did not ask for
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


class Exchange(Protocol):
    url: str
    headers: dict[str, str]
    body: bytes

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]: ...

    def translator(self) -> StreamTranslator: ...


class OpenAIToOpenAI:
    """The client and the upstream both speak OpenAI: the body goes through with the upstream's
    model name, the answer comes back byte for byte."""

    def __init__(
        self, api: str, body: dict[str, Any], route: dict[str, Any], *, stream: bool
    ) -> None:
        path = "chat/completions" if api == "chat" else "embeddings"
        self.url = f"{route['base_url']}/{path}"
        self.headers = openai_adapter.headers(route["api_key"])
        self.body = openai_adapter.request_body(
            body, route["upstream_model"], stream=stream, options=route.get("options")
        )
        self.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RelayError(
                502, "The upstream sent an invalid response.", type="upstream_error"
            ) from None
        return raw, openai_adapter.usage_of(payload) if isinstance(payload, dict) else None

    def translator(self) -> StreamTranslator:
        return OpenAIPassthrough(self.wants_usage)


def make_exchange(
    api: str, body: dict[str, Any], route: dict[str, Any], *, stream: bool
) -> Exchange:
    shape = route.get("shape", "openai")
    if shape == "openai":
        return OpenAIToOpenAI(api, body, route, stream=stream)
    raise RelayError(500, f"No adapter for upstream shape {shape!r}.", type="server_error")
