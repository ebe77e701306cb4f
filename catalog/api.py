"""What the relay's ``/v1/models`` says of a model, in OpenRouter's shape beside OpenAI's
fields (``id``, ``object``, ``created``, ``owned_by``, which the openai SDK's
``models.list()`` reads): published with the catalog as each model's ``meta`` (catalog.sync),
so the relay builds its answer once per catalog load, never per request.

Prices are OpenRouter's: decimal strings in USD per token (per 1M / 10^6, never in exponent
notation), per request and per image as they are. The names: ``prompt``, ``completion``,
``input_cache_read``, ``input_cache_write`` (5 minutes), ``internal_reasoning``, ``audio``
(input audio tokens), ``request``, ``image``; and ours where OpenRouter has none:
``input_cache_write_1h``, ``audio_output`` (output audio tokens), ``audio_second`` (a second
of input audio). A price type the model has no price of its own for is left out (it is billed
at the base price: input, or output for reasoning). Long-context tiers are in
``pricing_tiers``: ``[{"above": prompt tokens, <the same names>: ...}]``.
"""

from __future__ import annotations

import calendar
from decimal import Decimal
from typing import Any

from .models import Model, PriceVersion, Route

MILLION = Decimal(1_000_000)

# PriceVersion field -> OpenRouter's name, for prices per 1M tokens.
PER_TOKEN_NAMES: tuple[tuple[str, str], ...] = (
    ("input", "prompt"),
    ("output", "completion"),
    ("cached_input", "input_cache_read"),
    ("cache_write", "input_cache_write"),
    ("cache_write_1h", "input_cache_write_1h"),
    ("reasoning", "internal_reasoning"),
    ("input_audio", "audio"),
    ("output_audio", "audio_output"),
)
# Prices per unit, as they are.
PER_UNIT_NAMES: tuple[tuple[str, str], ...] = (
    ("request", "request"),
    ("image", "image"),
    ("audio_second", "audio_second"),
)


def plain(amount: Decimal) -> str:
    """A decimal as OpenRouter writes one: positional, without trailing zeros or an exponent
    ("0.000002", never "2E-6"; "0", "15")."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")


def per_token(per_million: Decimal | str) -> str:
    """USD per 1M tokens as USD per token: ``per_token("2") == "0.000002"``."""
    return plain(Decimal(per_million) / MILLION)


def pricing(price: PriceVersion) -> dict[str, str]:
    result: dict[str, str] = {}
    for field, name in PER_TOKEN_NAMES:
        value = getattr(price, field)
        if value is not None:
            result[name] = per_token(value)
    for field, name in PER_UNIT_NAMES:
        value = getattr(price, field)
        if value or name in ("request", "image"):  # OpenRouter always lists these two
            result[name] = plain(value or Decimal(0))
    return result


def pricing_tiers(price: PriceVersion) -> list[dict[str, Any]]:
    names = dict(PER_TOKEN_NAMES)
    tiers: list[dict[str, Any]] = []
    for tier in price.tiers or []:
        entry: dict[str, Any] = {"above": int(tier["above"])}
        for field, value in tier.items():
            if field in names and value is not None:
                entry[names[field]] = per_token(str(value))
        tiers.append(entry)
    return tiers


def created(model: Model) -> int:
    """The model's release (00:00 UTC that day), else when it was added here: a Unix time."""
    if model.release_date is not None:
        return calendar.timegm(model.release_date.timetuple())
    return int(model.added_at.timestamp())


def architecture(model: Model) -> dict[str, Any]:
    inputs = [str(m) for m in model.input_modalities or []] or ["text"]
    if model.vision and "image" not in inputs:
        inputs.append("image")
    default_output = "embeddings" if model.embeddings else "text"
    outputs = [str(m) for m in model.output_modalities or []] or [default_output]
    return {
        "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
        "input_modalities": inputs,
        "output_modalities": outputs,
        "tokenizer": model.family or None,
    }


def model_meta(model: Model, price: PriceVersion, routes: list[Route]) -> dict[str, Any]:
    """Everything ``/v1/models`` says of ``model`` but its id (``routes``: the active ones, in
    the relay's order; the first is the "top provider")."""
    top = routes[0] if routes else None
    context = (top.context_window if top else None) or model.context_window
    max_output = (top.max_output_tokens if top else None) or model.max_output_tokens
    return {
        "object": "model",
        "created": created(model),
        "owned_by": model.author or model.provider.slug,
        "name": model.name,
        "description": model.description,
        "context_length": model.context_window,
        "architecture": architecture(model),
        "pricing": pricing(price),
        "pricing_tiers": pricing_tiers(price),
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": max_output,
            "is_moderated": False,
        },
        "supported_parameters": list(model.supported_parameters or []),
        "knowledge_cutoff": model.knowledge_cutoff or None,
        "open_weights": model.open_weights,
        "deprecated": model.deprecated,
    }
