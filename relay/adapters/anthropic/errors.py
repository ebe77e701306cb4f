"""Errors in Anthropic's shape, for clients of ``POST /v1/messages``."""

from __future__ import annotations

from typing import Final

import orjson

from ...errors import RelayError

_dumps = orjson.dumps

_ANTHROPIC_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicError(RelayError):
    """An error rendered in Anthropic's shape: ``{"type":"error","error":{"type","message"}}``.

    A :class:`RelayError`, so the relay's existing ``except RelayError`` handling (status,
    headers such as Retry-After, ``body()``) renders it without a special case."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(status, message, type=type, headers=headers)

    def body(self) -> bytes:
        return _dumps({"type": "error", "error": {"type": self.type, "message": self.message}})

    def sse(self) -> bytes:
        """The same error as a stream ``error`` event (for failures after the stream began)."""
        return b"event: error\ndata: " + self.body() + b"\n\n"


def _anthropic_error_type(status: int) -> str:
    found = _ANTHROPIC_ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def from_relay_error(error: RelayError) -> AnthropicError:
    """An OpenAI-style relay error as Anthropic's: same status, message and headers; the
    type follows the status (402 ``billing_error``, 503 ``overloaded_error``, 504
    ``timeout_error`` ...), as Anthropic's SDKs pick their exception class by status."""
    if isinstance(error, AnthropicError):
        return error
    return AnthropicError(
        error.status, _anthropic_error_type(error.status), error.message, headers=error.headers
    )


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", message)
