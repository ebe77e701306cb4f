"""What each upstream takes: request rules as data, per provider and per model.

A provider's ``options`` (``catalog.Provider.options``, published on every route) say where its
API differs from OpenAI's. Every key is optional:

``send_stream_options`` (bool, default true)
    Whether the upstream takes ``stream_options``. The relay asks for usage on every stream;
    a provider that rejects the field (and sends usage on streams anyway) gets none.
``max_tokens_param`` (``"max_tokens"`` | ``"max_completion_tokens"``)
    What the upstream calls the output cap. A client may send either name (or both: the
    smaller wins, as the hold assumes); the upstream gets this one. Absent: as sent.
``rename_params`` ({client name: upstream name})
    Parameters the provider takes under another name (Mistral's ``random_seed``).
``drop_params`` ([name, ...])
    Parameters never forwarded: the same as ``unsupported`` with ``"drop"``.
``unsupported`` ({name: rule})
    Parameters the provider does not take on any of its models. A rule is ``"drop"`` (its docs
    say it accepts and ignores them: not forwarded), ``"refuse"`` (it rejects them: the relay
    answers 400 before anything is held) or ``{"only": [values]}`` (only these values are
    taken, e.g. ``n`` of 1; another value is refused).
``reasoning_models`` ([prefix, ...])
    Upstream model names starting with one of these are reasoning models, with the rules of
    ``reasoning_unsupported`` ({name: rule}, as above) on top of ``unsupported``;
``not_reasoning_models`` ([prefix, ...])
    except those starting with one of these (OpenAI's ``gpt-5-chat-latest`` takes sampling
    parameters while the other GPT-5 models do not).
``completions_models`` ([prefix, ...])
    Upstream model names starting with one of these serve text completions
    (``POST /v1/completions``); absent, none of the provider's models do.
``completions_api`` (``"openai"`` | ``"fim"``, default ``"openai"``)
    How: OpenAI's ``/completions``, passed through, or Mistral's fill-in-the-middle
    ``/fim/completions`` (Codestral), translated both ways (:mod:`relay.adapters.completions`).

A model's ``supported_parameters`` (OpenRouter's names, see :data:`OPENROUTER_NAMES`) is the
other source: when it is not empty, a request with a parameter the model does not support is
refused with 400, unless the route's rules drop that parameter. An empty list means "not
known": everything is forwarded. Some lists come from capability flags (models.dev's
temperature, tool calling, structured output and reasoning flags) and say nothing about the
other sampling parameters: so :data:`CORE` parameters are checked against every list, the
:data:`EXTENDED` ones only against a list naming at least one of them (a full OpenRouter list).

The rules are built once per route and per model when first used and kept on the catalog's
entries (a catalog reload replaces the entries, and with them these): per request, the work is
a few set lookups over the body's keys.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import RelayError

log = logging.getLogger("relay")

# A request's parameter -> OpenRouter's name for it in ``supported_parameters`` (chat API).
OPENROUTER_NAMES: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "tools": "tools",
    "functions": "tools",
    "tool_choice": "tool_choice",
    "function_call": "tool_choice",
    "response_format": "response_format",
    "reasoning_effort": "reasoning",
    "reasoning": "reasoning",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "repetition_penalty": "repetition_penalty",
    "logit_bias": "logit_bias",
    "logprobs": "logprobs",
    "top_logprobs": "top_logprobs",
    "top_k": "top_k",
    "min_p": "min_p",
    "top_a": "top_a",
    "parallel_tool_calls": "parallel_tool_calls",
    "web_search_options": "web_search_options",
    "verbosity": "verbosity",
}
# The same for Anthropic Messages requests (``POST /v1/messages``).
OPENROUTER_NAMES_MESSAGES: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop_sequences": "stop",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "thinking": "reasoning",
}
# Checked against every non-empty list (``max_tokens`` never is: a cap is always taken).
CORE = frozenset(
    {"temperature", "top_p", "stop", "tools", "tool_choice", "response_format", "reasoning"}
)
# Checked only against a list that names at least one of them.
EXTENDED = frozenset(set(OPENROUTER_NAMES.values()) - CORE)

MAX_TOKENS = ("max_tokens", "max_completion_tokens")
# Every key ``options`` may have (documented above).
KEYS = frozenset(
    {
        "send_stream_options",
        "max_tokens_param",
        "rename_params",
        "drop_params",
        "unsupported",
        "reasoning_models",
        "reasoning_unsupported",
        "not_reasoning_models",
        "completions_models",
        "completions_api",
    }
)
COMPLETIONS_APIS = ("openai", "fim")
DROP = "drop"
REFUSE = "refuse"


def unsupported_parameter(model: str, name: str) -> RelayError:
    return RelayError(
        400,
        f"Model '{model[:100]}' does not support parameter '{name}'.",
        param=name,
        code="unsupported_parameter",
    )


def unsupported_value(model: str, name: str, value: Any, allowed: tuple[Any, ...]) -> RelayError:
    accepted = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in allowed)
    return RelayError(
        400,
        f"Model '{model[:100]}' does not support {str(value)[:40]} for parameter '{name}'; "
        f"only {accepted} is supported.",
        param=name,
        code="unsupported_value",
    )


def _table(options: dict[str, Any], key: str) -> dict[str, Any]:
    table = options.get(key)
    return table if isinstance(table, dict) else {}


class Rules:
    """One route's request rules, compiled from its provider's options and upstream model."""

    __slots__ = (
        "completions",
        "drop",
        "max_tokens_param",
        "only",
        "reasoning",
        "refuse",
        "rename",
        "stream_options",
    )

    def __init__(self, options: dict[str, Any] | None, upstream_model: str = "") -> None:
        options = options or {}
        self.stream_options = bool(options.get("send_stream_options", True))
        param = options.get("max_tokens_param")
        self.max_tokens_param: str | None = param if param in MAX_TOKENS else None
        self.rename: tuple[tuple[str, str], ...] = tuple(
            (str(old), str(new)) for old, new in _table(options, "rename_params").items()
        )
        drop = {str(name) for name in options.get("drop_params") or ()}
        refuse: set[str] = set()
        only: dict[str, tuple[Any, ...]] = {}
        tables = [_table(options, "unsupported")]
        prefixes = tuple(str(p) for p in options.get("reasoning_models") or ())
        exceptions = tuple(str(p) for p in options.get("not_reasoning_models") or ())
        # The upstream model reasons (by its provider's options): it takes reasoning_effort.
        self.reasoning = bool(
            prefixes
            and upstream_model.startswith(prefixes)
            and not (exceptions and upstream_model.startswith(exceptions))
        )
        if self.reasoning:
            tables.append(_table(options, "reasoning_unsupported"))
        # How the upstream model serves /v1/completions, or None where it does not.
        serving = tuple(str(p) for p in options.get("completions_models") or ())
        api = options.get("completions_api") or "openai"
        self.completions: str | None = (
            str(api)
            if serving and upstream_model.startswith(serving) and api in COMPLETIONS_APIS
            else None
        )
        for table in tables:
            for name, rule in table.items():
                if rule == DROP:
                    drop.add(name)
                elif rule == REFUSE:
                    refuse.add(name)
                elif isinstance(rule, dict) and isinstance(rule.get("only"), list):
                    only[name] = tuple(rule["only"])
                else:  # an operator's typo must not fail every request of the route
                    log.warning("ignoring the unknown rule %r for parameter %r", rule, name)
        self.drop = frozenset(drop)
        self.refuse = frozenset(refuse)
        self.only = only

    def refusal(self, body: dict[str, Any], model: str) -> RelayError | None:
        """The 400 this upstream's rules give ``body`` (an OpenAI chat request), if any."""
        if self.refuse:
            for name in self.refuse:
                if body.get(name) is not None:
                    return unsupported_parameter(model, name)
        for name, allowed in self.only.items():
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or value not in allowed):
                return unsupported_value(model, name, value, allowed)
        return None

    def apply(
        self, body: dict[str, Any], *, stream: bool, completions: bool = False
    ) -> dict[str, Any]:
        """``body`` (a copy the caller may change) as this upstream takes it. A text-completions
        request (``completions``) keeps its ``max_tokens``: that endpoint has no other name
        for it."""
        if stream:
            if self.stream_options:
                stream_options = dict(body.get("stream_options") or {})
                stream_options["include_usage"] = True
                body["stream_options"] = stream_options
            else:
                body.pop("stream_options", None)
        for name in self.drop:
            body.pop(name, None)
        param = None if completions else self.max_tokens_param
        if param is not None:
            caps = [c for c in (body.pop(n, None) for n in MAX_TOKENS) if c is not None]
            if caps:
                body[param] = min(caps)
        for old, new in self.rename:
            if old in body:
                body[new] = body.pop(old)
        return body


NONE = Rules(None)


def of_route(route: dict[str, Any]) -> Rules:
    """The route's rules, built on first use and kept on the catalog entry."""
    rules = route.get("_rules")
    if not isinstance(rules, Rules):
        rules = route["_rules"] = Rules(route.get("options"), str(route.get("upstream_model")))
    return rules


class ModelRules:
    """What a model's ``supported_parameters`` refuse, by each client API's names."""

    __slots__ = ("chat", "messages", "structured")

    def __init__(self, listed: list[Any]) -> None:
        supported = {str(p) for p in listed}
        checked = (CORE | EXTENDED if supported & EXTENDED else CORE) if supported else set()

        def unsupported(names: dict[str, str]) -> frozenset[str]:
            return frozenset(n for n, o in names.items() if o in checked and o not in supported)

        self.chat = unsupported(OPENROUTER_NAMES)
        self.messages = unsupported(OPENROUTER_NAMES_MESSAGES)
        # JSON schemas (``response_format`` of type json_schema) need "structured_outputs".
        self.structured = not supported or "structured_outputs" in supported

    def found(self, body: dict[str, Any], api: str) -> list[str]:
        """The body's parameters the model does not support."""
        unsupported = self.messages if api == "messages" else self.chat
        found = [key for key in body if key in unsupported] if unsupported else []
        if api == "chat" and not self.structured and "response_format" not in found:
            response_format = body.get("response_format")
            if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
                found.append("response_format")
        return found


def of_model(model: dict[str, Any]) -> ModelRules:
    """The model's rules, built on first use and kept on the catalog entry."""
    rules = model.get("_param_rules")
    if not isinstance(rules, ModelRules):
        rules = model["_param_rules"] = ModelRules(model.get("supported_parameters") or [])
    return rules


def routes_for(model: dict[str, Any], body: dict[str, Any], api: str) -> list[dict[str, Any]]:
    """The model's routes that can take ``body``; raises the first route's 400 when none can.
    A parameter the model does not support is refused unless the route drops it."""
    routes: list[dict[str, Any]] = model["routes"]
    if api == "embeddings":
        return routes
    name = str(body.get("model"))
    found = of_model(model).found(body, api)
    usable: list[dict[str, Any]] | None = None
    first: RelayError | None = None
    for i, route in enumerate(routes):
        error = _refusal(route, body, name, found, api)
        if error is None:
            if usable is not None:
                usable.append(route)
            continue
        first = first or error
        if usable is None:
            usable = routes[:i]
    # A refusal sets both, so neither is None once any route was refused.
    if usable is None or first is None:
        return routes
    if not usable:
        raise first
    return usable


def _refusal(
    route: dict[str, Any], body: dict[str, Any], model: str, found: list[str], api: str
) -> RelayError | None:
    if api != "chat":  # the rules are in OpenAI's names (see relay.exchange for Messages)
        return unsupported_parameter(model, found[0]) if found else None
    rules = of_route(route)
    for param in found:
        if param not in rules.drop:
            return unsupported_parameter(model, param)
    return rules.refusal(body, model)
