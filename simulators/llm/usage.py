"""The ``usage`` object of an answer in each provider's dialect, so the relay's billing can be
tested against every shape it reads (``x-demo-usage-shape``, or the model's name).

One request's figures mean the same in every shape: ``prompt`` tokens in all (cached ones,
cache writes and audio included, as OpenAI counts them), ``completion`` visible output tokens,
plus ``reasoning_tokens`` spent thinking and ``output_audio_tokens`` of audio. Each shape then
reports them as that provider does:

* ``openai``: ``completion_tokens`` includes reasoning and audio, broken down in
  ``completion_tokens_details``; ``prompt_tokens_details`` has cached and audio tokens.
* ``deepseek``: ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens`` (no
  ``prompt_tokens_details``); reasoning in ``completion_tokens`` and its details.
* ``gemini`` (its OpenAI-compatible endpoint): only ``prompt_tokens``, ``completion_tokens``
  and ``total_tokens``; thoughts are left out of ``completion_tokens`` but counted in
  ``total_tokens``.
* ``anthropic`` (the Messages endpoint, always): ``input_tokens`` excludes cache reads and
  writes; ``cache_creation`` splits the writes into 5-minute and 1-hour ones; thinking is
  part of ``output_tokens``.
"""

from __future__ import annotations

from .config import DemoConfig
from .wire import JSON


def openai_shape(cfg: DemoConfig, model: str) -> str:
    """The header's shape, else the one the model's name implies."""
    if cfg.usage_shape is not None and cfg.usage_shape != "anthropic":
        return cfg.usage_shape
    name = model.lower()
    if name.startswith("gemini"):
        return "gemini"
    if name.startswith("deepseek"):
        return "deepseek"
    return "openai"


def openai_usage(cfg: DemoConfig, model: str, prompt: int, completion: int) -> dict[str, JSON]:
    """The usage of a chat completion (and of a stream's usage chunk)."""
    cached = min(cfg.cached_tokens, prompt)
    audio_in = min(cfg.input_audio_tokens, prompt - cached)
    reasoning = cfg.reasoning_tokens
    audio_out = cfg.output_audio_tokens
    output = completion + reasoning + audio_out
    shape = openai_shape(cfg, model)
    if shape == "gemini":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + audio_out,
            "total_tokens": prompt + output,
        }
    if shape == "deepseek":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_cache_hit_tokens": cached,
            "prompt_cache_miss_tokens": prompt - cached,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": audio_out,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def anthropic_usage(cfg: DemoConfig, prompt: int, output: int) -> dict[str, JSON]:
    """Anthropic usage: ``input_tokens`` excludes cache reads/writes (OpenAI's includes them).

    So the same ``x-demo-prompt-tokens``/``x-demo-cached-tokens`` describe the same prompt
    on both APIs: ``input + cache_creation + cache_read == prompt``. Thinking
    (``x-demo-reasoning-tokens``) is counted in ``output_tokens``.
    """
    cached = min(cfg.cached_tokens, prompt)
    five_minutes = min(cfg.cache_creation_tokens, prompt - cached)
    one_hour = min(cfg.cache_creation_1h_tokens, prompt - cached - five_minutes)
    return {
        "input_tokens": prompt - cached - five_minutes - one_hour,
        "cache_creation_input_tokens": five_minutes + one_hour,
        "cache_read_input_tokens": cached,
        "cache_creation": {
            "ephemeral_5m_input_tokens": five_minutes,
            "ephemeral_1h_input_tokens": one_hour,
        },
        "output_tokens": output + cfg.reasoning_tokens,
    }
