"""The rules of the real providers that stand behind the one OpenAI chat shape.

* OpenAI's reasoning models (names starting ``o1``, ``o3``, ``o4``, ``gpt-5``: whoever serves
  them, those names are OpenAI's) refuse ``max_tokens`` (they take ``max_completion_tokens``)
  and a ``temperature`` other than 1, with OpenAI's 400 bodies.
* Mistral (``x-demo-provider: mistral``, which the relay sends on a demo route of its Mistral
  provider) refuses, as its strict schema does, the OpenAI fields it does not have: ``seed``
  (Mistral's is ``random_seed``), ``max_completion_tokens`` and ``stream_options``, with
  Mistral's 422 ``extra_forbidden`` body; and a stream carries its usage on its last chunk,
  asked for or not.

Anything else is as lenient as OpenAI: parameters that change nothing here are accepted.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import openai_error
from .wire import json_response

OPENAI_REASONING = ("o1", "o3", "o4", "gpt-5")
# OpenAI's names that Mistral's schema does not have.
MISTRAL_FORBIDDEN = ("seed", "max_completion_tokens", "stream_options")


def usage_on_last_chunk(provider: str) -> bool:
    """Whether the provider's streams carry their usage on the last chunk (Mistral's way)."""
    return provider == "mistral"


def refusal(body: dict[str, Any], provider: str) -> web.Response | None:
    """The error ``provider`` (or OpenAI, for its reasoning models) gives this otherwise valid
    chat request, if any."""
    model = str(body.get("model"))
    if model.startswith(OPENAI_REASONING):
        if body.get("max_tokens") is not None:
            return openai_error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return openai_error(
                400,
                f"Unsupported value: 'temperature' does not support {temperature} with this "
                "model. Only the default (1) value is supported.",
                param="temperature",
                code="unsupported_value",
            )
    elif provider == "mistral":
        extra = [
            {
                "type": "extra_forbidden",
                "loc": ["body", name],
                "msg": "Extra inputs are not permitted",
                "input": body[name],
            }
            for name in MISTRAL_FORBIDDEN
            if name in body
        ]
        if extra:
            return json_response(
                422,
                {
                    "object": "error",
                    "message": {"detail": extra},
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )
    return None
