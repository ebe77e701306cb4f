"""Sticky routes: a conversation keeps to the route where its prompt cache lives.

A provider's prompt cache (OpenAI's automatic caching, Anthropic's ``cache_control`` blocks,
DeepSeek's and Gemini's context caches) lives with that provider: a model served by several
routes that spreads one conversation over them writes the cache on every request and never
reads it. So, for a model with more than one route, the route that answered a conversation is
remembered in Redis and tried first for the conversation's next request, for as long as the
conversation keeps coming back (an idle expiry, ``TP_STICKY_ROUTE_TTL`` seconds, 300 by
default: the lifetime of Anthropic's and OpenAI's in-memory caches; 0 turns it off).

A conversation is named, first match wins, by

1. the ``x-session-id`` request header (OpenRouter's name for it),
2. the body's ``prompt_cache_key`` (OpenAI's; it also reaches the upstream unchanged),
3. the first system (or developer) message and the first user message: what every later turn
   of a conversation repeats, and what a cache's prefix starts with.

within one account and one model. Only a digest is kept (BLAKE2b, 128 bits), never content;
an idle conversation's key expires by itself. A pin only chooses among the routes of the first
priority (it never sends a request to a fallback the operator ranked lower). A pinned route
that is failing (its breaker open, or an attempt failing) is passed over as any route is, and
the route that answers instead is pinned from then on.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson

SESSION_HEADER = b"x-session-id"
_MAX_SESSION = 256


def conversation(
    account: int, model: str, body: dict[str, Any], session: bytes | None
) -> str | None:
    """The Redis key naming this request's conversation, or None when it has none to name."""
    if session:
        material: Any = ["s", session[:_MAX_SESSION].decode("latin-1")]
    elif isinstance(body.get("prompt_cache_key"), str) and body["prompt_cache_key"]:
        material = ["k", body["prompt_cache_key"][:_MAX_SESSION]]
    else:
        opening = _opening(body)
        if opening is None:
            return None
        material = ["m", *opening]
    digest = blake2b(orjson.dumps(material), digest_size=16).hexdigest()
    return f"tp:sticky:{{{account}}}:{model}:{digest}"


def _opening(body: dict[str, Any]) -> tuple[Any, Any] | None:
    """(the first system prompt, the first user message's content); None without a user
    message. Chat's system and developer messages and Anthropic's top-level ``system``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    system: Any = body.get("system")
    user: Any = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if system is None and role in ("system", "developer"):
            system = message.get("content")
        elif role == "user":
            user = message.get("content")
            break
    if user is None:
        return None
    return system, user


def route_token(route: dict[str, Any]) -> str:
    return f"{route['provider']}|{route['upstream_model']}"


def pin_first(routes: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """``routes`` (in priority order) with the one ``token`` names first, when it is of the
    first priority: a pin chooses among the routes the operator put first, it never overrides
    a priority (a conversation that failed over to a later priority goes back to the first
    once it answers again). Unchanged otherwise."""
    first = routes[0].get("priority", 0)
    for i, route in enumerate(routes):
        if route.get("priority", 0) != first:
            break
        if route_token(route) == token:
            return [route, *routes[:i], *routes[i + 1 :]] if i else routes
    return routes
