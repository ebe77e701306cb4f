"""Small wire-level helpers that every endpoint of the demo upstream shares.

Ids, JSON bodies (parsed without raising, answered with orjson), the bearer token, the JSON type
names that OpenAI's errors quote, and dropping a connection on purpose. Nothing here knows an API
shape or the simulator's configuration.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson
from aiohttp import web

JSON = Any

# Set on a request when this simulator closed the socket on purpose (not a client cancel).
DROPPED = web.RequestKey("demo_dropped", bool)


class Invalid:
    """Sentinel type for an unparsable JSON body."""


INVALID = Invalid()

_RUN_TAG = secrets.token_hex(4)  # distinguishes ids across restarts
_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    """Unique-enough ids without per-request ``uuid4``/urandom calls."""
    return f"{prefix}demo{_RUN_TAG}{next(_COUNTER):012d}"


def load_json(raw: bytes) -> JSON:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return INVALID


def json_response(
    status: int, payload: JSON, headers: dict[str, str] | None = None
) -> web.Response:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(status=status, body=orjson.dumps(payload), headers=hdrs)


def close_transport(request: web.Request) -> None:
    """Drop the TCP connection on purpose; queued bytes are flushed first (FIN, not RST)."""
    request[DROPPED] = True
    transport = request.transport
    if transport is not None:
        transport.close()


def drop(request: web.Request) -> web.StreamResponse:
    """Answer nothing: aiohttp's attempt to send the returned response fails quietly."""
    close_transport(request)
    return web.StreamResponse(status=204)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def type_name(value: Any) -> str:
    """The JSON type name OpenAI uses in ``invalid_type`` errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def bearer_token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()
