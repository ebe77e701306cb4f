"""Configuration of the demo upstream: server-wide defaults and per-request ``x-demo-*`` headers.

One set of parsers reads every source (``DEMO_UPSTREAM_*`` environment variables, CLI flags and
``x-demo-*`` request headers), so a value means the same wherever it is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-5-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "demo-chat",
    "demo-embed",
)
ENV_PREFIX = "DEMO_UPSTREAM_"
# The providers' dialects of a usage object (see ``usage``).
USAGE_SHAPES = ("openai", "deepseek", "gemini", "anthropic")

_ERROR_WORDS = frozenset({"disconnect", "cut", "no-usage"})


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Server-wide defaults; every field but ``record_limit``/``models`` is per-request too.

    ``error`` is one of ``None``, an HTTP status string (``"429"``, ``"500"``, ...),
    ``"disconnect"``, ``"cut"`` or ``"no-usage"``; ``error_rate`` is the probability (0..1)
    that a request gets that error, so a "flaky upstream" demo can fail only some requests.
    """

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    linger_ms: float = 0.0
    completion_tokens: int = 16
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    usage_shape: str | None = None  # None: by the endpoint and the model's name
    error: str | None = None
    error_rate: float = 1.0
    chunks: int | None = None
    retry_after: int = 1
    provider: str = ""
    # Seconds a prompt prefix stays in this upstream's prompt cache (0: no cache). With a
    # cache, a prompt that starts with messages seen within that time reports them as cached
    # (``x-demo-cached-tokens`` set explicitly wins).
    prompt_cache_s: float = 0.0
    record_limit: int = 200
    models: tuple[str, ...] = DEFAULT_MODELS
    # The API keys it accepts, as a provider knows its customers' keys (empty: any key). A
    # request with another gets the provider's 401; OpenAI's quotes the key it was sent, so
    # that tests can see a relay keep it from its clients (DEMO_UPSTREAM_API_KEYS: a comma-
    # separated list; never per request).
    api_keys: tuple[str, ...] = ()


class BadValue(ValueError):
    """A configuration value (header, env var or flag) that cannot be parsed."""


def _parse_ms(value: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        raise BadValue(f"expected a number of milliseconds, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0:
        raise BadValue(f"expected a non-negative number of milliseconds, got {value!r}")
    return ms


def _parse_count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise BadValue(f"expected a non-negative integer, got {value!r}") from None
    if n < 0:
        raise BadValue(f"expected a non-negative integer, got {value!r}")
    return n


def _parse_positive(value: str) -> int:
    n = _parse_count(value)
    if n < 1:
        raise BadValue(f"expected a positive integer, got {value!r}")
    return n


def _parse_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise BadValue(f"expected a probability between 0 and 1, got {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise BadValue(f"expected a probability between 0 and 1, got {value!r}")
    return rate


def _parse_error(value: str) -> str | None:
    """Normalise an error spec; ``""``/``"none"`` clears a server-wide error for one request."""
    spec = value.strip().lower()
    if spec in ("", "none", "0"):
        return None
    if spec in _ERROR_WORDS:
        return spec
    if spec.isdigit() and 400 <= int(spec) <= 599:
        return spec
    raise BadValue(
        f"expected an HTTP status 400-599, 'disconnect', 'cut', 'no-usage' or 'none', got {value!r}"
    )


def _parse_shape(value: str) -> str | None:
    """A provider's usage dialect (see ``usage``); ``""`` means the default."""
    shape = value.strip().lower()
    if shape == "":
        return None
    if shape not in USAGE_SHAPES:
        raise BadValue(f"expected one of {', '.join(USAGE_SHAPES)}, got {value!r}")
    return shape


def _parse_provider(value: str) -> str:
    """Whose rules to follow (``simulators.llm.providers``); any other name: OpenAI's."""
    return value.strip().lower()


def _parse_models(value: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in value.split(",") if m.strip())
    if not models:
        raise BadValue("expected a comma-separated list of model ids")
    return models


#: Per-request steering headers -> (DemoConfig field, parser).
HEADER_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "x-demo-latency-ms": ("latency_ms", _parse_ms),
    "x-demo-chunk-delay-ms": ("chunk_delay_ms", _parse_ms),
    "x-demo-linger-ms": ("linger_ms", _parse_ms),
    "x-demo-completion-tokens": ("completion_tokens", _parse_count),
    "x-demo-prompt-tokens": ("prompt_tokens", _parse_count),
    "x-demo-cached-tokens": ("cached_tokens", _parse_count),
    "x-demo-cache-creation-tokens": ("cache_creation_tokens", _parse_count),
    "x-demo-cache-creation-1h-tokens": ("cache_creation_1h_tokens", _parse_count),
    "x-demo-reasoning-tokens": ("reasoning_tokens", _parse_count),
    "x-demo-input-audio-tokens": ("input_audio_tokens", _parse_count),
    "x-demo-output-audio-tokens": ("output_audio_tokens", _parse_count),
    "x-demo-usage-shape": ("usage_shape", _parse_shape),
    "x-demo-error": ("error", _parse_error),
    "x-demo-error-rate": ("error_rate", _parse_rate),
    "x-demo-chunks": ("chunks", _parse_positive),
    "x-demo-retry-after": ("retry_after", _parse_count),
    "x-demo-provider": ("provider", _parse_provider),
    "x-demo-prompt-cache-s": ("prompt_cache_s", _parse_ms),
}

#: Every configurable field -> its parser (environment variables and CLI flags).
FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    **{name: parser for name, parser in HEADER_FIELDS.values()},
    "record_limit": _parse_count,
    "models": _parse_models,
    "api_keys": _parse_models,
}


def config_from_env(
    environ: Mapping[str, str] | None = None, base: DemoConfig | None = None
) -> DemoConfig:
    """Build a config from ``DEMO_UPSTREAM_<FIELD>`` variables, e.g. ``DEMO_UPSTREAM_LATENCY_MS``.

    ``DEMO_UPSTREAM_MODELS`` is comma-separated. Raises ``ValueError`` on unparsable values
    so a typo in ``.env`` fails loudly at start-up instead of silently using a default.
    """
    env = os.environ if environ is None else environ
    overrides: dict[str, Any] = {}
    for name, parser in FIELD_PARSERS.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        try:
            overrides[name] = parser(raw)
        except BadValue as exc:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
    return replace(base or DemoConfig(), **overrides)


def request_config(base: DemoConfig, headers: Mapping[str, str]) -> DemoConfig:
    """Apply ``x-demo-*`` header overrides; raises ``BadValue`` naming the header."""
    overrides: dict[str, Any] | None = None
    for header, (name, parser) in HEADER_FIELDS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = parser(raw)
        except BadValue as exc:
            raise BadValue(f"invalid {header} header: {exc}") from None
        if overrides is None:
            overrides = {}
        overrides[name] = value
    return base if overrides is None else replace(base, **overrides)


def completion_budget(cfg: DemoConfig, cap: int | None) -> tuple[int, bool]:
    """(tokens to produce, whether the cap truncated them)."""
    wanted = cfg.completion_tokens
    if cap is not None and cap < wanted:
        return cap, True
    return wanted, False
