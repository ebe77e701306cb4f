"""A key secret is shown once and never stored: not in the database, the logs, var/ or Redis.
A provider API key saved in the admin is kept encrypted: never in plain text in the database,
Redis, the logs or var/, and still reaches its upstream."""

from __future__ import annotations

import io
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.models import UsageEvent
from catalog.models import Provider
from catalog.services import save_provider
from core import state
from keys.services import issue_key
from simulators.llm import start_in_thread

from .conftest import start_relay, wait_until
from .test_admin_services import change_url, submit
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


# ---- provider API keys ---------------------------------------------------------------------


def database_dump() -> str:
    """Every row of every table, as PostgreSQL prints it."""
    parts: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')
            parts += [row[0] for row in cursor.fetchall()]
    return "\n".join(parts)


def var_files() -> Iterator[Path]:
    var = Path(settings.VAR_DIR)
    for path in var.rglob("*") if var.exists() else []:
        if path.is_file():
            yield path


def last_request(upstream: Any) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{upstream.root_url}/_demo/requests/last", timeout=5) as r:
        return json.loads(r.read())


def upstream_requests(upstream: Any) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{upstream.root_url}/_demo/stats", timeout=5) as r:
        return int(json.loads(r.read())["requests"])


@pytest.fixture
def staff_client(transactional_db: None) -> Client:
    call_command(
        "adduser", "root@example.com", "--password", "x" * 24, "--staff", stdout=io.StringIO()
    )
    client = Client()
    client.force_login(get_user_model().objects.get(email="root@example.com"))
    return client


@pytest.fixture
def customer_key(make_user: Any) -> str:
    user = make_user("fay@example.com")
    call_command("credit", "fay@example.com", "5", stdout=io.StringIO())
    return issue_key(account=user.account, name="ci")[1]


@pytest.fixture
def own_upstream() -> Iterator[Any]:
    """A demo upstream of the test's own: it records the headers of what it receives."""
    server = start_in_thread()
    yield server
    server.stop()


def reaches(relay: Any, secret: str, upstream: Any) -> bool:
    """Whether the relay now sends mistral-small to ``upstream`` (it reloads the catalog on
    the pub/sub message that follows the admin's commit)."""
    before = upstream_requests(upstream)
    status, _, body = post(f"{relay.base_url}/chat/completions", chat("mistral-small"), key=secret)
    assert status == 200, body
    return upstream_requests(upstream) > before


def test_a_provider_key_saved_in_the_admin_is_nowhere_in_plain_text(
    staff_client: Client,
    customer_key: str,
    own_upstream: Any,
    relay: Any,
    worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider_key = f"live-{secrets.token_urlsafe(24)}"
    provider = Provider.objects.get(slug="mistral")
    saved = submit(
        staff_client,
        change_url(provider),
        base_url=own_upstream.base_url,
        new_api_key=provider_key,
    )
    assert saved.status_code == 302
    wait_until(lambda: reaches(relay, customer_key, own_upstream), timeout=2)

    # It reaches the upstream, as the provider expects it.
    status, headers, _ = post(
        f"{relay.base_url}/chat/completions", chat("mistral-small"), key=customer_key
    )
    assert status == 200
    seen = last_request(own_upstream)["headers"]
    assert seen["Authorization"] == f"Bearer {provider_key}"
    wait_until(lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).exists())

    page = staff_client.get(change_url(provider)).content.decode()
    assert provider_key not in page
    database = io.StringIO()
    call_command("dumpdata", stdout=database)
    for where, text in (
        ("dumpdata", database.getvalue()),
        ("the database", database_dump()),
        ("Redis", redis_dump().decode("utf-8", "replace")),
        ("the relay's log", relay.log_path.read_text()),
        ("captured logs (portal and worker)", caplog.text),
    ):
        assert provider_key not in text, where
    assert Provider.objects.get(slug="mistral").api_key  # kept, encrypted
    for path in var_files():
        assert provider_key.encode() not in path.read_bytes(), path


class EchoingUpstream(BaseHTTPRequestHandler):
    """A provider that refuses the key and repeats it in its error (some do)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {token}.", "code": 401}}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_upstream_echoing_the_provider_key_has_it_scrubbed(
    customer_key: str, relay: Any, worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Shaped like no known key format: only the relay's knowledge of it can scrub it.
        provider_key = f"plainword{secrets.token_hex(12)}"
        provider = Provider.objects.get(slug="mistral")
        provider.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        save_provider(provider=provider, api_key=provider_key)

        def refused() -> Any:
            status, _, body = post(
                f"{relay.base_url}/chat/completions", chat("mistral-small"), key=customer_key
            )
            return body if status == 502 else None

        body = wait_until(refused, timeout=2)
        message = body["error"]["message"]
        assert "401" in message and "[redacted]" in message
        assert provider_key not in json.dumps(body)
        assert provider_key not in relay.log_path.read_text()
        assert provider_key not in caplog.text
    finally:
        server.shutdown()


def test_rotation_reencrypts_every_key_and_the_relay_still_works(
    customer_key: str, own_upstream: Any, settings: Any, tmp_path: Path, redis_client: Any
) -> None:
    old = list(settings.TP_SECRETS_KEYS)
    provider_key = f"live-{secrets.token_urlsafe(24)}"
    provider = Provider.objects.get(slug="mistral")
    provider.base_url = own_upstream.base_url
    save_provider(provider=provider, api_key=provider_key)
    before = Provider.objects.get(pk=provider.pk).api_key

    new = Fernet.generate_key().decode()
    settings.TP_SECRETS_KEYS = [new, *old]
    out = io.StringIO()
    call_command("rotatesecrets", stdout=out)
    assert "Re-encrypted 1 provider API keys" in out.getvalue()

    after = Provider.objects.get(pk=provider.pk).api_key
    assert after != before
    assert Fernet(new.encode()).decrypt(after.encode()).decode() == provider_key
    for key in old:
        with pytest.raises(InvalidToken):
            Fernet(key.encode()).decrypt(after.encode())
    published = json.loads(redis_client.get(state.CATALOG))
    token = published["models"]["mistral-small"]["routes"][0]["api_key_encrypted"]
    assert Fernet(new.encode()).decrypt(token.encode()).decode() == provider_key
    assert provider_key not in redis_client.get(state.CATALOG)

    # The old key can go: a relay that knows only the new one opens the key and uses it.
    fresh = start_relay(tmp_path, TP_SECRETS_KEYS=new)
    try:
        assert reaches(fresh, customer_key, own_upstream)
        assert last_request(own_upstream)["headers"]["Authorization"] == f"Bearer {provider_key}"
        assert provider_key not in fresh.log_path.read_text()
    finally:
        fresh.stop()
