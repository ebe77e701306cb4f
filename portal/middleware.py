"""Middleware of the portal's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

CHUNK_BYTES = 64 * 1024


async def _in_batches(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a synchronous iterator from the request's own thread (where its database cursor
    lives), about 64 KiB per hop, without ever holding all of it."""

    def take() -> list[bytes]:
        batch, size = [], 0
        for part in parts:
            batch.append(part)
            size += len(part)
            if size >= CHUNK_BYTES:
                break
        return batch

    while batch := await sync_to_async(take)():
        for part in batch:
            yield part


class AsyncStreamingMiddleware:
    """Under ASGI, Django reads a streaming response's synchronous iterator to its end before
    sending a byte (and warns). Static files (WhiteNoise), the account export and the CSV
    exports are such iterators: hand them over as asynchronous ones, so they stream in constant
    memory. Under WSGI (the test client, the live server) responses are left as they are."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            isinstance(request, ASGIRequest)
            and isinstance(response, StreamingHttpResponse)
            and not response.is_async
        ):
            response.streaming_content = _in_batches(iter(response.streaming_content))
        return response
