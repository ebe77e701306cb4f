"""Token usage in Anthropic's shape and ours, and the tolerant value checks the translations
share (package-private: the underscored names are for the sibling modules).

Usage rule (billing): Anthropic reports ``input_tokens`` *excluding* cache reads and cache
writes; our :class:`~relay.usage.Usage` (like OpenAI) counts the whole prompt. So
``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` and
``cached_tokens = cache_read_input_tokens``. Cache writes are priced apart (``cache_write``,
``cache_write_1h``; see core.pricing): ``cache_creation: {ephemeral_5m_input_tokens,
ephemeral_1h_input_tokens}`` splits them by the cache's lifetime, and a write it does not
account for (an upstream without the split) is a 5-minute one. Thinking is part of
``output_tokens``; ``output_tokens_details.thinking_tokens``, where given, is its share.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeGuard

from ...usage import Usage

JSON = dict[str, Any]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int:
    """A token count from an upstream: tolerant of null, missing, float and negative values."""
    if _is_int(value) or isinstance(value, float):
        return max(0, int(value))
    return 0


def _cache_writes(usage: dict[str, Any]) -> tuple[int, int] | None:
    """(5-minute, 1-hour) cache writes, or None when ``usage`` says nothing of them."""
    total = usage.get("cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if total is None:
        if not isinstance(split, dict):
            return None
        five_minutes = _int(split.get("ephemeral_5m_input_tokens"))
        return five_minutes, _int(split.get("ephemeral_1h_input_tokens"))
    one_hour = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    written = _int(total)
    one_hour = min(one_hour, written)
    return written - one_hour, one_hour


def _thinking(usage: dict[str, Any]) -> int | None:
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and details.get("thinking_tokens") is not None:
        return _int(details["thinking_tokens"])
    return None


def usage_from_anthropic(usage: dict[str, Any]) -> Usage:
    """Billing usage from an Anthropic ``usage`` object (see the module docstring's rule)."""
    cache_read = _int(usage.get("cache_read_input_tokens"))
    write, write_1h = _cache_writes(usage) or (0, 0)
    return Usage(
        prompt_tokens=_int(usage.get("input_tokens")) + cache_read + write + write_1h,
        completion_tokens=_int(usage.get("output_tokens")),
        cached_tokens=cache_read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=_thinking(usage) or 0,
    )


def _openai_usage_dict(usage: Usage) -> JSON:
    """Our figures in OpenAI's shape; cache writes as OpenRouter reports them
    (``prompt_tokens_details.cache_write_tokens``), reasoning as OpenAI does."""
    prompt_details: JSON = {"cached_tokens": usage.cached_tokens}
    written = usage.cache_write_tokens + usage.cache_write_1h_tokens
    if written:
        prompt_details["cache_write_tokens"] = written
    if usage.input_audio_tokens:
        prompt_details["audio_tokens"] = usage.input_audio_tokens
    out: JSON = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": prompt_details,
    }
    if usage.reasoning_tokens or usage.output_audio_tokens:
        completion_details: JSON = {"reasoning_tokens": usage.reasoning_tokens}
        if usage.output_audio_tokens:
            completion_details["audio_tokens"] = usage.output_audio_tokens
        out["completion_tokens_details"] = completion_details
    return out


def _anthropic_usage_dict(usage: Usage) -> JSON:
    """Our figures in Anthropic's split: ``input_tokens`` excludes cache reads and writes,
    ``cache_creation`` splits the writes by the cache's lifetime (most OpenAI-compatible
    upstreams report none: then ``cache_creation_input_tokens`` is 0 and the split absent)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    write = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    write_1h = min(usage.cache_write_1h_tokens, usage.prompt_tokens - cached - write)
    out: JSON = {
        "input_tokens": usage.prompt_tokens - cached - write - write_1h,
        "cache_creation_input_tokens": write + write_1h,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    }
    if write or write_1h:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": write,
            "ephemeral_1h_input_tokens": write_1h,
        }
    return out


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
        return replace(usage_from_anthropic(usage), estimated=True)
    if kind != "message_delta":
        return current
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return current
    output = _int(usage.get("output_tokens"))
    base = current if current is not None else Usage(0, 0)
    reasoning = _thinking(usage)
    if reasoning is None:
        reasoning = base.reasoning_tokens
    if usage.get("input_tokens") is None:
        if current is None:
            return Usage(0, output, 0, estimated=True, reasoning_tokens=reasoning)
        return replace(
            current, completion_tokens=output, estimated=False, reasoning_tokens=reasoning
        )
    cached = (
        _int(usage["cache_read_input_tokens"])
        if usage.get("cache_read_input_tokens") is not None
        else base.cached_tokens
    )
    write, write_1h = _cache_writes(usage) or (base.cache_write_tokens, base.cache_write_1h_tokens)
    return Usage(
        _int(usage["input_tokens"]) + cached + write + write_1h,
        output,
        cached,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=reasoning,
    )
