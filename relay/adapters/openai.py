"""The OpenAI-compatible upstream shape."""

from __future__ import annotations

from typing import Any

import orjson

from ..usage import Usage


def request_body(
    body: dict[str, Any],
    upstream_model: str,
    *,
    stream: bool,
    options: dict[str, Any] | None = None,
) -> bytes:
    """The client's request with the upstream's model name; on streams the upstream is always
    asked for usage, since a stream billed without it would be a guess.

    ``options`` are the provider's quirks: ``send_stream_options: false`` for providers that
    reject the field (and send usage on streams anyway), ``drop_params`` and
    ``rename_params`` for parameters a provider does not take under OpenAI's name."""
    out = dict(body)
    out["model"] = upstream_model
    quirks = options or {}
    if stream:
        if quirks.get("send_stream_options", True):
            stream_options = dict(out.get("stream_options") or {})
            stream_options["include_usage"] = True
            out["stream_options"] = stream_options
        else:
            out.pop("stream_options", None)
    for name in quirks.get("drop_params", ()):
        out.pop(name, None)
    for old, new in (quirks.get("rename_params") or {}).items():
        if old in out:
            out[new] = out.pop(old)
    return orjson.dumps(out)


def headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }


def usage_of(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(cached or usage.get("prompt_cache_hit_tokens") or 0),
    )


def error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or "")
        if isinstance(err, str):
            return err
    return ""
