"""Downloads the portal streams (the request log's and the audit log's CSV), and the plain-text
400 a download's bad filters get (a file link has no page to show a form's errors on)."""

from __future__ import annotations

from collections.abc import Iterable

from django import forms
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone


def csv_download(lines: Iterable[str], name: str) -> StreamingHttpResponse:
    """``lines`` as ``<name>-<UTC time>.csv``, streamed as they are made, never cached."""
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "private, no-store"
    return response


def form_errors(form: forms.Form) -> HttpResponse:
    """A 400 naming each field's errors, one line each."""
    return HttpResponse(
        "\n".join(
            f"{name}: {' '.join(str(e) for e in errors)}" for name, errors in form.errors.items()
        ),
        status=400,
        content_type="text/plain; charset=utf-8",
    )
