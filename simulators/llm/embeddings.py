"""OpenAI's embeddings, ``POST /v1/embeddings``: deterministic unit vectors, float or base64.

A vector is derived from a hash of its input (text or token array), so the same input gets the
same vector in every run and on every machine. Its length is the model's (``MODEL_DIMENSIONS``,
``DEFAULT_EMBEDDING_DIMENSIONS`` for any other model) or the request's ``dimensions``: OpenAI's
text-embedding-3 models shorten to at most their own size, ada-002 refuses the parameter, and the
demo's other models take any size (tests ask for small vectors).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import sys
from array import array
from typing import Any

import orjson
from aiohttp import web

from .config import BadValue, request_config
from .endpoint import DemoState, active_error, json_headers, read_body, send_cut_body, sleep_ms
from .errors import bad_request, openai_injected, openai_missing_key
from .wire import INVALID, JSON, bearer_token, drop, is_int

DEFAULT_EMBEDDING_DIMENSIONS = 1024
MAX_EMBEDDING_DIMENSIONS = 16384
# The providers' published output sizes, by upstream model name.
MODEL_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "mistral-embed": 1024,
}
# Models that refuse ``dimensions`` (OpenAI's message); text-embedding-3 ones cap it at their size.
_FIXED_DIMENSIONS = frozenset({"text-embedding-ada-002"})
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})


def _dimensions(model: str, requested: Any) -> int | web.Response:
    """The vector size for ``model`` and the request's ``dimensions``, or the error."""
    native = MODEL_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
    if requested is None:
        return native
    if model in _FIXED_DIMENSIONS:
        return bad_request("This model does not support specifying dimensions.")
    limit = native if model in _SHORTENABLE else MAX_EMBEDDING_DIMENSIONS
    if not is_int(requested) or not 1 <= requested <= limit:
        return bad_request(
            f"Invalid value for 'dimensions': expected an integer between 1 and {limit}.",
            "dimensions",
            "invalid_value",
        )
    return int(requested)


@functools.lru_cache(maxsize=4096)
def _embedding_vector(key: bytes, dimensions: int) -> array[float]:
    """Unit-length float32 vector derived from a hash of the input (stable across runs)."""
    raw = array("h")
    raw.frombytes(hashlib.shake_256(key).digest(2 * dimensions))
    if sys.byteorder == "big":
        raw.byteswap()
    values = [v / 32768.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values])


@functools.lru_cache(maxsize=4096)
def _embedding_base64(key: bytes, dimensions: int) -> str:
    """Base64 of little-endian float32, exactly what OpenAI sends for ``encoding_format``."""
    vector = _embedding_vector(key, dimensions)
    if sys.byteorder == "big":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


_EMBEDDING_INPUT_INVALID = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def _embedding_inputs(value: JSON) -> list[tuple[bytes, int]] | str:
    """Normalise ``input`` to (hash key, token estimate) pairs, or an error message."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(is_int(v) for v in value):
        items = [value]  # a single token array
    elif isinstance(value, list):
        items = value
    else:
        return _EMBEDDING_INPUT_INVALID
    if not items:
        return "'$.input' is invalid: expected a non-empty string or array."
    out: list[tuple[bytes, int]] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                return "'$.input' is invalid: input strings must not be empty."
            out.append((item.encode(), -(-len(item) // 4)))
        elif isinstance(item, list) and item and all(is_int(v) for v in item):
            out.append((b"\x00tokens:" + orjson.dumps(item), len(item)))
        else:
            return _EMBEDDING_INPUT_INVALID
    return out


async def embeddings(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/embeddings``: deterministic unit vectors from a hash of each input."""
    body = await read_body(request, state)
    if not bearer_token(request):
        return openai_missing_key()
    try:
        cfg = request_config(state.config, request.headers)
    except BadValue as exc:
        return bad_request(str(exc), None, "invalid_demo_header")
    if body is INVALID or not isinstance(body, dict):
        return bad_request("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str):
        return bad_request("you must provide a model parameter")
    if "input" not in body:
        return bad_request(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    inputs = _embedding_inputs(body["input"])
    if isinstance(inputs, str):
        return bad_request(inputs, "input", "invalid_value")
    dimensions = _dimensions(model, body.get("dimensions"))
    if isinstance(dimensions, web.Response):
        return dimensions
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        return bad_request(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )

    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return openai_injected(int(error), cfg)

    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": (
                _embedding_base64(key, dimensions)
                if encoding == "base64"
                else _embedding_vector(key, dimensions).tolist()
            ),
        }
        for index, (key, _) in enumerate(inputs)
    ]
    prompt = cfg.prompt_tokens if cfg.prompt_tokens is not None else sum(n for _, n in inputs)
    payload: dict[str, JSON] = {"object": "list", "data": data, "model": model}
    if error != "no-usage":
        payload["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    body_bytes = orjson.dumps(payload)
    if error == "cut":
        return await send_cut_body(request, body_bytes, json_headers("x-request-id"))
    return web.Response(body=body_bytes, headers=json_headers("x-request-id"))
