"""What an upstream reports a request used, in OpenAI's convention (see core.pricing):
``prompt_tokens`` counts the whole prompt, its cached, cache-written and audio tokens
included; ``completion_tokens`` the whole output, its reasoning and audio tokens included."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    estimated: bool = False
    cache_write_tokens: int = 0  # written to a 5-minute cache
    cache_write_1h_tokens: int = 0  # written to a 1-hour cache
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    def counts(self) -> dict[str, int]:
        """The token counts by the names ``core.pricing.cost`` and the usage event use."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "input_audio_tokens": self.input_audio_tokens,
            "output_audio_tokens": self.output_audio_tokens,
        }
