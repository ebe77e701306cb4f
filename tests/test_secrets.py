"""A key secret is shown once and never stored: not in the database, the logs, var/ or Redis."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import UsageEvent

from .conftest import wait_until
from .test_relay import chat, post

pytestmark = pytest.mark.usefixtures("catalog")


def redis_dump() -> bytes:
    """Every key and value in the test Redis, as raw bytes (the cache holds pickles)."""
    raw = redis_lib.Redis.from_url(settings.REDIS_URL)
    parts: list[bytes] = []
    for name in raw.scan_iter(count=1000):
        kind = raw.type(name)
        parts.append(name)
        if kind == b"string":
            parts.append(raw.get(name) or b"")
        elif kind == b"hash":
            for field, value in raw.hgetall(name).items():
                parts += [field, value]
        elif kind == b"list":
            parts += raw.lrange(name, 0, -1)
        elif kind == b"zset":
            parts += raw.zrange(name, 0, -1)
        elif kind == b"set":
            parts += list(raw.smembers(name))
    return b"\n".join(parts)


def test_no_secret_is_kept_anywhere(
    make_user: Any, relay: Any, worker: Any, caplog: pytest.LogCaptureFixture
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
    assert secret.encode() not in redis_dump()
    var = Path(settings.VAR_DIR)
    for path in var.rglob("*") if var.exists() else []:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_the_admin_shows_neither_secret_nor_digest(make_user: Any) -> None:
    from django.contrib.auth import get_user_model

    from keys.models import ApiKey, ManagementKey
    from keys.services import issue_key, issue_management_key

    owner = make_user("owner@example.com")
    key, secret = issue_key(account=owner.account, name="in-admin")
    management, management_secret = issue_management_key(account=owner.account, name="m")
    staff = get_user_model().objects.create_superuser(email="op@example.com", password="x" * 20)
    client = Client()
    client.force_login(staff)
    for url, obj, hidden in (
        (reverse("admin:keys_apikey_changelist"), key, secret),
        (reverse("admin:keys_apikey_change", args=[key.pk]), key, secret),
        (reverse("admin:keys_managementkey_changelist"), management, management_secret),
        (
            reverse("admin:keys_managementkey_change", args=[management.pk]),
            management,
            management_secret,
        ),
    ):
        body = client.get(url).content.decode()
        assert obj.masked in body
        assert hidden not in body and obj.digest not in body
    assert ApiKey.objects.filter(digest=key.digest).exists()
    assert management_secret not in str(list(ManagementKey.objects.values()))
