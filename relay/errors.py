"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import re

import orjson


class RelayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> RelayError:
    return RelayError(400, message, param=param, code=code)


def unauthorized(message: str = "Incorrect API key provided.") -> RelayError:
    # OpenAI's own answer to a wrong key is an invalid_request_error with this code.
    return RelayError(401, message, type="invalid_request_error", code="invalid_api_key")


_SECRETISH = re.compile(
    # (a key shown masked, as OpenAI's 401 does: "sk-ab***cd", "sk-proj-****abcd")
    r"(tp-sk-[A-Za-z0-9]+|sk-[A-Za-z0-9_\-]{8,}|[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*|"
    r"Bearer\s+\S+|https?://\S+|"
    r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)"
)


def scrub(text: str, limit: int = 500, secret: str = "") -> str:
    """An upstream's message without anything that could be a key, a URL or an address, nor
    ``secret`` (the provider key the request carried, whatever its shape) if an upstream
    echoes it."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", text)[:limit]
