"""A key secret is shown once and never stored: not in the database, the logs, var/ or Redis."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import UsageEvent

from .conftest import wait_until
from .test_relay import chat, post

pytestmark = pytest.mark.usefixtures("catalog")


def redis_dump(redis_client: Any) -> str:
    parts = []
    for name in redis_client.scan_iter(count=1000):
        kind = redis_client.type(name)
        parts.append(name)
        if kind == "string":
            parts.append(redis_client.get(name) or "")
        elif kind == "hash":
            parts.append(json.dumps(redis_client.hgetall(name)))
        elif kind == "list":
            parts.append(json.dumps(redis_client.lrange(name, 0, -1)))
        elif kind == "zset":
            parts.append(json.dumps(redis_client.zrange(name, 0, -1)))
        elif kind == "set":
            parts.append(json.dumps(sorted(redis_client.smembers(name))))
    return "\n".join(parts)


def test_no_secret_is_kept_anywhere(
    make_user: Any, relay: Any, worker: Any, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = make_user("erin@example.com")
    call_command("credit", "erin@example.com", "2", stdout=io.StringIO())
    client = Client()
    client.force_login(user)
    page = client.post(reverse("keys"), {"name": "ci"}).content.decode()
    secret = page.split('data-testid="new-key">')[1].split("<")[0]

    url = f"{relay.base_url}/chat/completions"
    status, headers, _ = post(url, chat("mistral-small"), key=secret)
    assert status == 200
    for payload in (chat("no-such-model"), b"{oops", chat("mistral-small", max_tokens=0)):
        status, _, body = post(url, payload, key=secret)
        assert status >= 400
        assert secret not in json.dumps(body)
    wait_until(lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).exists())
    out = io.StringIO()
    call_command("revokekey", secret, stdout=out)
    assert secret not in out.getvalue()

    database = io.StringIO()
    call_command("dumpdata", stdout=database)
    assert secret not in database.getvalue()
    assert secret[6:] not in database.getvalue()  # not even without its prefix
    assert secret not in relay.log_path.read_text()
    assert secret not in caplog.text
    assert secret not in redis_dump(redis_client)
    var = Path(settings.VAR_DIR)
    for path in var.rglob("*") if var.exists() else []:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
