"""OpenAI's Responses API (``POST /v1/responses``) on every chat-capable model.

Translated to Chat Completions once and back, the way :mod:`relay.adapters.anthropic` serves
``/v1/messages``: the chat request then goes to any route (an OpenAI-compatible upstream as
it is, an Anthropic-shaped one through the chat -> Messages translation), and the chat answer
or chunk stream comes back as a ``response`` or its typed events. The bill is the chat path's:
the same usage, read from the same upstream answer.

    :mod:`.request` :func:`validate_responses_request`, :func:`responses_request_to_chat`;
    :mod:`.response` :func:`chat_response_to_responses`, :class:`ChatStreamToResponses`.

Pure functions and a small state machine: dicts in, dicts or complete SSE frames out; no I/O.
"""

from .request import responses_request_to_chat, validate_responses_request
from .response import ChatStreamToResponses, chat_response_to_responses

__all__ = [
    "ChatStreamToResponses",
    "chat_response_to_responses",
    "responses_request_to_chat",
    "validate_responses_request",
]
