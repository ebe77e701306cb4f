"""The OpenAI-compatible upstream shape."""

from __future__ import annotations

from typing import Any

import orjson

from ..usage import Usage
from . import quirks


def request_body(
    body: dict[str, Any],
    upstream_model: str,
    *,
    stream: bool,
    rules: quirks.Rules = quirks.NONE,
    completions: bool = False,
) -> bytes:
    """The client's request with the upstream's model name, as the route's provider takes it
    (``rules``: see :mod:`relay.adapters.quirks`); on streams the upstream is always asked for
    usage where it takes ``stream_options``, since a stream billed without it would be a
    guess. ``completions``: a text-completions request (see :meth:`quirks.Rules.apply`)."""
    out = rules.apply(dict(body), stream=stream, completions=completions)
    out["model"] = upstream_model
    return orjson.dumps(out)


def headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }


def _count(data: Any, name: str) -> int:
    value = data.get(name) if isinstance(data, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return 0


def usage_of(payload: dict[str, Any]) -> Usage | None:
    """The usage of an OpenAI-compatible answer or chunk, in each provider's dialect:

    * OpenAI: ``prompt_tokens_details.cached_tokens`` / ``audio_tokens``,
      ``completion_tokens_details.reasoning_tokens`` / ``audio_tokens`` (parts of the wholes).
    * DeepSeek: ``prompt_cache_hit_tokens`` (of ``prompt_tokens`` = hits + misses).
    * OpenRouter: ``prompt_tokens_details.cache_write_tokens``.
    * Gemini (its OpenAI-compatible endpoint) and xAI leave thinking out of
      ``completion_tokens`` but count it in ``total_tokens``: output the total has beyond
      prompt + completion is reasoning the completion left out, and is billed as such."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    reasoning = _count(completion_details, "reasoning_tokens")
    unreported = _count(usage, "total_tokens") - prompt - completion
    if unreported > 0:
        completion += unreported
        reasoning = max(reasoning, unreported)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=(
            _count(prompt_details, "cached_tokens") or _count(usage, "prompt_cache_hit_tokens")
        ),
        cache_write_tokens=_count(prompt_details, "cache_write_tokens"),
        reasoning_tokens=reasoning,
        input_audio_tokens=_count(prompt_details, "audio_tokens"),
        output_audio_tokens=_count(completion_details, "audio_tokens"),
    )


def finish_reason_of(payload: dict[str, Any]) -> str:
    """The first choice's ``finish_reason`` of an answer or chunk ("" when it has none)."""
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str):
            return reason[:32]
    return ""


_FINISH = b'"finish_reason":'


def finish_reason_in(event: bytes) -> str:
    """The ``finish_reason`` of a chunk passed through unparsed, read from its bytes ("" while
    it is null): a search per event, so the stream's hot path parses nothing more."""
    at = event.find(_FINISH)
    while at >= 0:
        start = at + len(_FINISH)
        while event[start : start + 1] == b" ":
            start += 1
        if event[start : start + 1] == b'"':
            end = event.find(b'"', start + 1)
            if end > start:
                return event[start + 1 : end][:32].decode("utf-8", "replace")
        at = event.find(_FINISH, start)
    return ""


def error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or "")
        if isinstance(err, str):
            return err
    return ""
