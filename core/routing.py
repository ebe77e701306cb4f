"""Provider routing preferences: OpenRouter's ``provider`` object, checked and normalised.

One validator for both places a preference can come from: a request's ``provider`` object
(the relay) and a key's defaults (the portal's key form and the keys API), so the two can never
disagree on what is valid. :func:`parse` returns the fields given, normalised (slugs lower-case,
prices as Decimal strings), as a plain dict: a key's defaults are stored in that form, and a
request's values override them field by field with a dict update (:func:`merge`).

The fields (OpenRouter's names and meanings):

- ``order``: provider slugs tried first, in that order; the others after them unless
  ``allow_fallbacks`` is false.
- ``only`` / ``ignore``: an allowlist / a denylist of provider slugs.
- ``allow_fallbacks`` (default true): false tries only the providers of ``order`` (without
  ``order``: the first provider that would be tried) and no others.
- ``require_parameters``: accepted; the relay always routes only to providers that take every
  parameter of the request (those an operator set to be dropped aside).
- ``sort``: ``price`` (cheapest first), ``throughput`` (most tokens a second first) or
  ``latency`` (least time to the first token first), from the routes' live figures.
- ``max_price``: the most to pay, ``prompt`` and ``completion`` in USD per 1M tokens,
  ``request`` per request and ``image`` per image; a route dearer on any given one is skipped.
- ``data_collection``: ``deny`` keeps only providers that state they do not train on prompts.
- ``zdr``: true keeps only providers that keep no prompts (zero data retention).

Pure: no Django, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

SORTS = ("price", "throughput", "latency")
MAX_PRICES = ("prompt", "completion", "request", "image")
FIELDS = (
    "order",
    "only",
    "ignore",
    "allow_fallbacks",
    "require_parameters",
    "sort",
    "max_price",
    "data_collection",
    "zdr",
)
SLUG_LISTS = ("order", "only", "ignore")
MAX_SLUGS = 50
MAX_MODELS = 10


class PreferenceError(ValueError):
    """A preference that is not valid: ``param`` names it (``provider.sort``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _slugs(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise PreferenceError(f"'{param}' must be an array of provider slugs (strings).", param)
    if len(value) > MAX_SLUGS:
        raise PreferenceError(f"'{param}' may name at most {MAX_SLUGS} providers.", param)
    out: list[str] = []
    for slug in value:
        slug = slug.strip().lower()[:100]
        if slug not in out:
            out.append(slug)
    return out


def _price(value: Any, param: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PreferenceError(f"'{param}' must be a number (USD).", param)
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise PreferenceError(f"'{param}' must be a number (USD).", param) from None
    if not price.is_finite() or price < 0:
        raise PreferenceError(f"'{param}' must be a number >= 0 (USD).", param)
    return str(price.normalize()) if price else "0"


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise PreferenceError(f"'{param}' must be a boolean.", param)
    return value


def parse(value: Any, where: str = "provider") -> dict[str, Any]:
    """The preferences in ``value`` (the ``provider`` object), checked and normalised; raises
    :class:`PreferenceError` naming the field (``<where>.<field>``) at the first fault. Fields
    sent as ``null`` count as not sent."""
    if not isinstance(value, dict):
        raise PreferenceError(f"'{where}' must be an object.", where)
    unknown = sorted(str(name) for name in value if name not in FIELDS)
    if unknown:
        raise PreferenceError(
            f"Unknown field '{where}.{unknown[0][:50]}': '{where}' takes {', '.join(FIELDS)}.",
            f"{where}.{unknown[0][:50]}",
        )
    out: dict[str, Any] = {}
    for name in FIELDS:
        raw = value.get(name)
        if raw is None:
            continue
        param = f"{where}.{name}"
        if name in SLUG_LISTS:
            out[name] = _slugs(raw, param)
        elif name in ("allow_fallbacks", "require_parameters", "zdr"):
            out[name] = _bool(raw, param)
        elif name == "sort":
            if raw not in SORTS:
                raise PreferenceError(
                    f"'{param}' must be one of {', '.join(SORTS)} (got {str(raw)[:30]!r}).",
                    param,
                )
            out[name] = raw
        elif name == "data_collection":
            if raw not in ("allow", "deny"):
                raise PreferenceError(f"'{param}' must be 'allow' or 'deny'.", param)
            out[name] = raw
        elif name == "max_price":
            if not isinstance(raw, dict):
                raise PreferenceError(
                    f"'{param}' must be an object ({', '.join(MAX_PRICES)}).", param
                )
            bad = sorted(str(k) for k in raw if k not in MAX_PRICES)
            if bad:
                raise PreferenceError(
                    f"Unknown field '{param}.{bad[0][:30]}': '{param}' takes "
                    f"{', '.join(MAX_PRICES)}.",
                    f"{param}.{bad[0][:30]}",
                )
            out[name] = {k: _price(v, f"{param}.{k}") for k, v in raw.items() if v is not None}
    return out


def parse_models(value: Any) -> list[str]:
    """The ``models`` fallback list: model ids in order, without repeats."""
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value):
        raise PreferenceError("'models' must be a non-empty array of model ids.", "models")
    if len(value) > MAX_MODELS:
        raise PreferenceError(f"'models' may name at most {MAX_MODELS} models.", "models")
    return list(dict.fromkeys(value))


@dataclass(frozen=True, slots=True)
class Preferences:
    """Parsed preferences with their defaults (see the module's docstring)."""

    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    allow_fallbacks: bool = True
    sort: str | None = None
    max_price: tuple[tuple[str, Decimal], ...] = ()
    deny_data_collection: bool = False
    zdr: bool = False

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Preferences:
        """From :func:`parse`'s normalised fields (or a merge of them)."""
        only = fields.get("only")
        return cls(
            order=tuple(fields.get("order") or ()),
            only=frozenset(only) if only is not None else None,
            ignore=frozenset(fields.get("ignore") or ()),
            allow_fallbacks=fields.get("allow_fallbacks", True),
            sort=fields.get("sort"),
            max_price=tuple((k, Decimal(v)) for k, v in (fields.get("max_price") or {}).items()),
            deny_data_collection=fields.get("data_collection") == "deny",
            zdr=bool(fields.get("zdr")),
        )

    @property
    def reorders(self) -> bool:
        """Whether the preferences, not the operator's priorities, set the order of routes."""
        return bool(self.order) or self.sort is not None


def merge(defaults: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """A key's defaults with a request's values over them, field by field (a ``max_price``
    given replaces the default one whole)."""
    return {**(defaults or {}), **(given or {})}
