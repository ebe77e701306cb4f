"""Text completions (``POST /v1/completions``, OpenAI's legacy shape, with ``suffix`` for
fill-in-the-middle) and Mistral's FIM API (``POST /v1/fim/completions``, Codestral).

Which routes serve them is data: the provider's ``completions_models`` and
``completions_api`` options (:mod:`relay.adapters.quirks`). An OpenAI-shaped upstream with
``/completions`` gets the request as it came; a Mistral FIM upstream gets it as Mistral's
strict schema takes it (:func:`fim_request`), and its answer, shaped as a chat completion,
comes back as a ``text_completion`` (:func:`fim_response_to_completion`,
:class:`FimStreamToCompletions`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import RelayError, bad_request
from ..usage import Usage
from . import quirks
from .openai import usage_of

# What Mistral's FIM endpoint takes (its strict schema refuses anything else with a 422).
FIM_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "min_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "random_seed",
    }
)
# OpenAI parameters FIM does not have, not forwarded when they ask for what FIM does anyway
# (their defaults); another value is refused with 400, never silently ignored.
FIM_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "echo": (False,),
    "logprobs": (0,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
}
# Never forwarded: who the end user is, and the stream's usage option (answered by the relay).
FIM_DROPPED = frozenset({"user", "stream_options"})
# Mistral's finish reasons in OpenAI's words.
FINISH_REASONS = {"stop": "stop", "length": "length", "model_length": "length"}


def _positive_int(body: dict[str, Any], name: str, *, minimum: int = 1) -> None:
    value = body.get(name)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < minimum
    ):
        raise bad_request(f"'{name}' must be an integer >= {minimum}.", param=name)


def validate_completions_request(body: dict[str, Any]) -> None:
    """What the relay checks of a ``/v1/completions`` request before anything is held."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if not prompt:
            raise bad_request("'prompt' must not be an empty array.", param="prompt")
    elif not isinstance(prompt, str):
        raise bad_request("'prompt' is required: a string or an array.", param="prompt")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise bad_request("'suffix' must be a string.", param="suffix")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    _positive_int(body, "max_tokens")
    _positive_int(body, "n")
    _positive_int(body, "best_of")


def routes_for(model: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's routes that serve text completions and take ``body``; a 400 naming why
    when none does."""
    served = [r for r in model["routes"] if quirks.of_route(r).completions is not None]
    if not served:
        raise RelayError(
            400,
            f"The model '{str(body.get('model'))[:100]}' does not serve text completions "
            f"(/v1/completions): use it with /v1/chat/completions.",
            param="model",
            code="unsupported_endpoint",
        )
    return quirks.routes_for({**model, "routes": served}, body, "chat")


def fim_request(
    body: dict[str, Any], upstream_model: str, *, stream: bool, rules: quirks.Rules
) -> dict[str, Any]:
    """``body`` as Mistral's FIM endpoint takes it: one prompt string, ``seed`` as
    ``random_seed`` (the provider's rules rename it), OpenAI's parameters at their defaults
    left out and any other value refused."""
    out = rules.apply(dict(body), stream=stream, completions=True)
    model = str(body.get("model"))
    prompt = out.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request(
            "Fill-in-the-middle takes one prompt: a string (or an array of one string).",
            param="prompt",
        )
    out["prompt"] = prompt
    if out.get("suffix") is None:
        out.pop("suffix", None)
    for name in list(out):
        if name in FIM_FIELDS:
            continue
        value = out.pop(name)
        if name in FIM_DROPPED or value is None:
            continue
        allowed = FIM_DEFAULTS.get(name)
        if allowed is None:
            raise quirks.unsupported_parameter(model, name)
        if isinstance(value, bool) != isinstance(allowed[0], bool) or value not in allowed:
            raise quirks.unsupported_value(model, name, value, allowed)
    out["model"] = upstream_model
    out["stream"] = stream
    return out


def _text(content: Any) -> str:
    """A message's content as text (Mistral may send a list of text chunks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _finish(reason: Any) -> str | None:
    if reason is None:
        return None
    return FINISH_REASONS.get(str(reason), "stop")


def fim_response_to_completion(
    payload: dict[str, Any], model: str, completion_id: str
) -> dict[str, Any]:
    """Mistral's FIM answer (a chat completion) as a ``text_completion``."""
    choices = []
    for i, choice in enumerate(payload.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        choices.append(
            {
                "text": _text(message.get("content") if isinstance(message, dict) else None),
                "index": choice.get("index", i),
                "logprobs": None,
                "finish_reason": _finish(choice.get("finish_reason")) or "stop",
            }
        )
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": payload.get("created") or int(time.time()),
        "model": model,
        "choices": choices,
    }
    usage = payload.get("usage")
    if isinstance(usage, dict):
        out["usage"] = usage
    return out


class FimStreamToCompletions:
    """Mistral's FIM chunks (``chat.completion.chunk``) as ``text_completion`` chunks.

    The usage (Mistral's is on the chunk with the ``finish_reason``) stays on that chunk,
    unless the client asked for ``stream_options.include_usage``: then, as OpenAI frames it,
    on a last chunk of its own with empty ``choices``, before ``data: [DONE]``."""

    def __init__(self, model: str, completion_id: str, include_usage: bool) -> None:
        self.head = {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.chunks = 0
        self.finished = False

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
            self.raw_usage = chunk["usage"]
        choices = []
        for i, choice in enumerate(chunk.get("choices") or ()):
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = _text(delta.get("content") if isinstance(delta, dict) else None)
            finish = _finish(choice.get("finish_reason"))
            if not text and finish is None:
                continue  # the role's opening delta: a completion stream has none
            if text:
                self.chunks += 1
            choices.append(
                {
                    "text": text,
                    "index": choice.get("index", i),
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        if not choices:
            return []
        out: dict[str, Any] = {**self.head, "choices": choices}
        if usage is not None and not self.include_usage:
            out["usage"] = self.raw_usage
        return [b"data: " + orjson.dumps(out) + b"\n\n"]

    def done(self) -> list[bytes]:
        """At the upstream's ``[DONE]``."""
        self.finished = True
        out = []
        if self.include_usage and self.raw_usage is not None:
            chunk = {**self.head, "choices": [], "usage": self.raw_usage}
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out
