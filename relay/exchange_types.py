"""What every exchange and its stream translator offer (:mod:`relay.exchange`), and the one
reading of an upstream's whole JSON answer they share.

The upstream client and the request hold exchanges and translators by these protocols alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from .errors import RelayError
from .usage import Usage


class StreamTranslator(Protocol):
    """Fed the upstream's bytes as they arrive; returns the bytes to send to the client."""

    usage: Usage | None
    finished: bool
    chunks: int

    @property
    def finish_reason(self) -> str:
        """Why the answer ended, as the usage event records it (``UsageEvent.finish_reason``):
        "" until the upstream says."""
        ...

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    def cut(self) -> bytes:
        """What to send when the upstream fails mid-stream (a timeout, a broken connection),
        before the body ends: nothing, except where the client's API has an event for it."""
        ...


class Exchange(Protocol):
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def finish_reason(self) -> str:
        """Of the whole answer, read by :meth:`response`."""
        ...

    def response(self, raw: bytes) -> tuple[bytes, Usage | None]: ...

    def translator(self) -> StreamTranslator: ...


def json_object(raw: bytes) -> dict[str, Any]:
    """An upstream's whole answer as a JSON object; anything else is the upstream's fault."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise RelayError(502, "The upstream sent an invalid response.", type="upstream_error")
    return payload
