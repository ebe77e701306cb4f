"""Token usage in Anthropic's shape and ours, and the tolerant value checks the translations
share (package-private: the underscored names are for the sibling modules).

Usage rule (billing): Anthropic reports ``input_tokens`` *excluding* cache reads and cache
writes; our :class:`~relay.usage.Usage` (like OpenAI) counts the whole prompt. So
``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` and
``cached_tokens = cache_read_input_tokens``. Cache writes are billed as ordinary prompt tokens:
the price model has no separate cache-write price (Anthropic charges them at 1.25x input).
"""

from __future__ import annotations

from typing import Any, TypeGuard

from ...usage import Usage

JSON = dict[str, Any]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int:
    """A token count from an upstream: tolerant of null, missing and float values."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float):
        return int(value)
    return 0


def usage_from_anthropic(usage: dict[str, Any]) -> Usage:
    """Billing usage from an Anthropic ``usage`` object (see the module docstring's rule)."""
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = (
        _int(usage.get("input_tokens"))
        + cache_read
        + _int(usage.get("cache_creation_input_tokens"))
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_int(usage.get("output_tokens")),
        cached_tokens=cache_read,
    )


def _openai_usage_dict(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _anthropic_usage_dict(usage: Usage) -> JSON:
    """OpenAI-style figures in Anthropic's split: ``input_tokens`` excludes cache reads.

    OpenAI-compatible upstreams report no cache writes, so ``cache_creation_input_tokens``
    is always 0."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    }


def anthropic_passthrough_usage(
    event: str, data: dict[str, Any], current: Usage | None
) -> Usage | None:
    """Usage read from an Anthropic stream passed through unchanged (Anthropic client and
    upstream). ``message_start`` gives the prompt side (its ``output_tokens``, usually 1, is
    kept but marked ``estimated``); ``message_delta`` gives the cumulative ``output_tokens``
    that replaces it, and any cumulative input figures it carries replace the earlier ones.
    Other events return ``current`` unchanged."""
    kind = event or data.get("type")
    if kind == "message_start":
        usage = (data.get("message") or {}).get("usage")
        if not isinstance(usage, dict):
            return current
        start = usage_from_anthropic(usage)
        return Usage(start.prompt_tokens, start.completion_tokens, start.cached_tokens, True)
    if kind != "message_delta":
        return current
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return current
    output = _int(usage.get("output_tokens"))
    if usage.get("input_tokens") is not None:
        cached = (
            _int(usage["cache_read_input_tokens"])
            if usage.get("cache_read_input_tokens") is not None
            else (current.cached_tokens if current else 0)
        )
        prompt = (
            _int(usage["input_tokens"]) + cached + _int(usage.get("cache_creation_input_tokens"))
        )
        return Usage(prompt, output, cached)
    if current is None:
        return Usage(0, output, 0, estimated=True)
    return Usage(current.prompt_tokens, output, current.cached_tokens)
