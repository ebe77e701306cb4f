"""Error bodies in each API's shape, as the real providers send them.

OpenAI: ``{"error": {"message", "type", "param", "code"}}`` with an ``x-request-id`` header.
Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with a
``request-id`` header. Errors injected by ``x-demo-error: <status>`` take the same shapes, with
``Retry-After`` on a 429.
"""

from __future__ import annotations

from aiohttp import web

from .config import DemoConfig
from .wire import json_response, new_id

_OPENAI_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request (injected by the demo upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided (injected by the demo upstream).",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests (injected by the demo upstream). Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}

_ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    hdrs = {"x-request-id": new_id("req_")}
    if headers:
        hdrs.update(headers)
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_response(status, payload, hdrs)


def anthropic_error(
    status: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = new_id("req_")
    hdrs = {"request-id": request_id}
    if headers:
        hdrs.update(headers)
    error_type = type_ or _ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    payload = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
    return json_response(status, payload, hdrs)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    """OpenAI's 400 ``invalid_request_error``."""
    return openai_error(400, message, param=param, code=code)


def openai_missing_key() -> web.Response:
    """OpenAI's 401 for a request without ``Authorization: Bearer ...``."""
    return openai_error(
        401,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


def _retry_headers(status: int, cfg: DemoConfig) -> dict[str, str] | None:
    return {"Retry-After": str(cfg.retry_after)} if status == 429 else None


def openai_injected(status: int, cfg: DemoConfig) -> web.Response:
    message, type_, code = _OPENAI_STATUS_ERRORS.get(
        status,
        (
            f"Injected HTTP {status} from the demo upstream.",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        ),
    )
    return openai_error(
        status, message, type_=type_, code=code, headers=_retry_headers(status, cfg)
    )


def anthropic_injected(status: int, cfg: DemoConfig) -> web.Response:
    return anthropic_error(
        status,
        f"Injected HTTP {status} from the demo upstream.",
        headers=_retry_headers(status, cfg),
    )
