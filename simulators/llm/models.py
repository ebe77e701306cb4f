"""The model list, ``GET /v1/models`` and ``GET /v1/models/{model}``, in two formats.

OpenAI's and Anthropic's SDKs use the same paths. A request with an ``anthropic-version`` header
gets Anthropic's format and auth rules (``x-api-key`` or a bearer token); any other, OpenAI's.
"""

from __future__ import annotations

from aiohttp import web

from .endpoint import DemoState
from .errors import anthropic_error, openai_error, openai_missing_key
from .wire import JSON, bearer_token, json_response

_MODEL_CREATED = 1_700_000_000


def _openai_model(model_id: str) -> dict[str, JSON]:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "tokenpapa"}


def _anthropic_model(model_id: str) -> dict[str, JSON]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
    }


def _models_auth_error(request: web.Request) -> web.Response | None:
    if request.headers.get("anthropic-version"):
        if request.headers.get("x-api-key") or bearer_token(request):
            return None
        return anthropic_error(401, "x-api-key header is required")
    if bearer_token(request):
        return None
    return openai_missing_key()


async def list_models(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``GET /v1/models`` in OpenAI's format, or Anthropic's with ``anthropic-version``."""
    state.record(request, None, b"")
    denied = _models_auth_error(request)
    if denied is not None:
        return denied
    models = state.config.models
    if request.headers.get("anthropic-version"):
        payload: dict[str, JSON] = {
            "data": [_anthropic_model(m) for m in models],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    else:
        payload = {"object": "list", "data": [_openai_model(m) for m in models]}
    return json_response(200, payload)


async def retrieve_model(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``GET /v1/models/{model}``."""
    state.record(request, None, b"")
    denied = _models_auth_error(request)
    if denied is not None:
        return denied
    model_id = request.match_info["model"]
    anthropic = bool(request.headers.get("anthropic-version"))
    if model_id not in state.config.models:
        if anthropic:
            return anthropic_error(404, f"model: {model_id}")
        return openai_error(
            404,
            f"The model '{model_id}' does not exist",
            param="model",
            code="model_not_found",
        )
    return json_response(200, _anthropic_model(model_id) if anthropic else _openai_model(model_id))
