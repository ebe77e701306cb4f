"""Slow, idle and half-sent connections, and forwarded headers, against the relay and the portal
as they are served in production (``python -m serving relay|portal``)."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from keys.models import ApiKey
from keys.services import issue_key
from keys.sync import push

from .conftest import ROOT, free_port, start_relay, wait_until
from .test_relay import assert_error, chat, post

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 3
DEADLINES = {
    "TP_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "TP_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "TP_HTTP_KEEPALIVE_TIMEOUT": "2",
}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


def push_body(sock: socket.socket, size: int) -> None:
    """Send up to ``size`` bytes of body, stopping where the server stops reading or hangs up."""
    sock.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + 5
    while sent < size and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 0.2)
            if not writable:
                break  # the server is not reading: its buffers are full
        except OSError:
            break  # it hung up
    sock.setblocking(True)


def closed_within(socks: list[socket.socket], seconds: float) -> tuple[list[bytes], float]:
    """Read every socket to its end; each must be closed by the server within ``seconds``.
    Returns what each received and when the last one closed."""
    started = time.monotonic()
    received = {s: b"" for s in socks}
    open_ = set(socks)
    for s in socks:
        s.setblocking(False)
    while open_:
        left = started + seconds - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(open_)} of {len(socks)} connections still open")
        readable, _, _ = select.select(list(open_), [], [], left)
        for s in readable:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[s] += data
            else:
                open_.discard(s)
                s.close()
    return [received[s] for s in socks], time.monotonic() - started


@pytest.mark.usefixtures("catalog")
def test_it_closes_idle_and_half_sent_relay_connections_and_still_serves(
    tmp_path: Path, alice_key: str
) -> None:
    relay = start_relay(tmp_path, **DEADLINES)
    port = int(relay.base_url.split(":")[2].split("/")[0])
    try:
        assert post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)[0] == 200
        before = rss_mib(relay.process.pid)
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
        idle = [connect(port) for _ in range(50)]
        # Half-sent: headers that never end; keyless bodies of 30 MB (each used to be read
        # whole before the key was looked at); a keyed body that stops half-way.
        half_headers = [connect(port, head + b"Accept: */*\r\n") for _ in range(8)]
        keyless = [
            connect(port, head + b"Content-Length: 30000000\r\n\r\n" + b"x" * 1000)
            for _ in range(8)
        ]
        keyed = [
            connect(
                port,
                head
                + f"Authorization: Bearer {alice_key}\r\nContent-Length: 100000\r\n\r\n".encode()
                + b'{"model": "mistral-large-2", ',
            )
            for _ in range(4)
        ]
        for sock in keyless:
            push_body(sock, 30_000_000)

        # A normal request is served meanwhile.
        status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)
        assert status == 200, body
        grown = rss_mib(relay.process.pid) - before
        assert grown < 64, f"the relay grew by {grown:.0f} MiB"

        answers, _ = closed_within(
            idle + half_headers + keyless + keyed, HEADER_TIMEOUT + BODY_TIMEOUT + 3
        )
        assert all(a == b"" for a in answers[:50]), "an idle connection got an answer"
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[50:58])
        for answer in answers[58:66]:
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert b"connection: close" in answer.lower()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[66:])
        # Nothing was held or billed for any of them.
        assert post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)[0] == 200
    finally:
        relay.stop()


@pytest.mark.usefixtures("catalog")
def test_a_body_larger_than_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, alice_key: str
) -> None:
    relay = start_relay(tmp_path, TP_RELAY_MAX_BODY_BYTES="1000000", **DEADLINES)
    port = int(relay.base_url.split(":")[2].split("/")[0])
    try:
        sock = connect(
            port,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
            + f"Authorization: Bearer {alice_key}\r\nContent-Length: 5000000\r\n\r\n".encode(),
        )
        (answer,), _ = closed_within([sock], 2)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'"code":"too_large"' in answer
    finally:
        relay.stop()


@pytest.mark.usefixtures("catalog")
def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path, alice: Any) -> None:
    key, secret = issue_key(account=alice.account, name="office only")
    ApiKey.objects.filter(pk=key.pk).update(allowed_ips=["10.0.0.0/8"])
    key.refresh_from_db()
    push(key)
    forged = {"X_Forwarded_For": "10.1.2.3"}

    relay = start_relay(tmp_path)  # TP_TRUSTED_PROXIES unset: nobody's forwarded headers
    try:
        status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=secret, **forged)
        assert_error(status, body, 403, "ip_not_allowed")
    finally:
        relay.stop()

    relay = start_relay(tmp_path, TP_TRUSTED_PROXIES="127.0.0.1")
    try:
        status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=secret, **forged)
        assert status == 200, body
        # Entries left of the last untrusted hop are the client's own words: not believed.
        status, _, body = post(
            f"{relay.base_url}/chat/completions",
            chat(),
            key=secret,
            X_Forwarded_For="10.1.2.3, 203.0.113.9",
        )
        assert_error(status, body, 403, "ip_not_allowed")
    finally:
        relay.stop()


# ---- the portal ------------------------------------------------------------------------------


@pytest.fixture
def serve_portal(transactional_db: None, tmp_path: Path) -> Iterator[Any]:
    """``python -m serving portal`` on the test database, as production runs it."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> str:
        port = free_port()
        environ = {
            **os.environ,
            "DATABASE_URL": (
                f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
                f"/{db['NAME']}"
            ),
            "REDIS_URL": settings.REDIS_URL,
            **DEADLINES,
            **env,
        }
        log = open(tmp_path / f"portal-{port}.log", "wb")  # handed to the child process
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "portal", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)

        def up() -> bool:
            assert process.poll() is None, (tmp_path / f"portal-{port}.log").read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, timeout=30)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def test_slow_clients_cannot_starve_the_portal(serve_portal: Any) -> None:
    base = serve_portal()
    port = int(base.rsplit(":", 1)[1])
    # More half-open connections than the old server had workers (2) or a threaded one would
    # have threads: headers that never end, a form body that stops half-way, and silence.
    half_headers = [connect(port, b"GET / HTTP/1.1\r\nHost: portal\r\n") for _ in range(20)]
    half_bodies = [
        connect(
            port,
            b"POST /accounts/login/ HTTP/1.1\r\nHost: portal\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 5000\r\n\r\nlogin=",
        )
        for _ in range(20)
    ]
    silent = [connect(port) for _ in range(20)]

    started = time.monotonic()
    for path in ("/", "/models/", "/docs/", "/accounts/login/"):
        response = requests.get(base + path, timeout=10)
        assert response.status_code == 200, path
    assert time.monotonic() - started < 10

    answers, _ = closed_within(half_headers + half_bodies + silent, BODY_TIMEOUT + 3)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:40])
    assert all(a == b"" for a in answers[40:])


def test_the_portal_refuses_an_oversized_body_before_reading_it(serve_portal: Any) -> None:
    base = serve_portal(TP_HTTP_MAX_BODY_BYTES="100000")
    port = int(base.rsplit(":", 1)[1])
    sock = connect(
        port,
        b"POST /webhooks/stripe/ HTTP/1.1\r\nHost: portal\r\nContent-Length: 50000000\r\n\r\n",
    )
    (answer,), _ = closed_within([sock], 2)
    assert answer.startswith(b"HTTP/1.1 413 ")


def failed_logins(base: str, count: int, **headers: str) -> list[bool]:
    """``count`` failed sign-ins, each from a different forwarded address and for a different
    address (so only a per-IP limit can stop them): whether each was throttled."""
    session = requests.Session()
    session.get(f"{base}/accounts/login/", timeout=10)
    statuses = []
    for i in range(count):
        response = session.post(
            f"{base}/accounts/login/",
            data={"login": f"nobody{i}@example.com", "password": "wrong password"},
            headers={
                "X-CSRFToken": session.cookies["csrftoken"],
                "Referer": f"{base}/accounts/login/",
                "X-Forwarded-For": f"198.51.100.{i + 1}",
                **headers,
            },
            timeout=10,
            allow_redirects=False,
        )
        statuses.append(
            response.status_code == 429 or "Too many failed login attempts" in response.text
        )
    return statuses


def test_the_portal_believes_forwarded_for_only_from_trusted_proxies(serve_portal: Any) -> None:
    # Untrusted: every attempt comes from 127.0.0.1, whatever the header says, and the per-IP
    # limit on failed sign-ins (10 a minute) stops the eleventh.
    throttled = failed_logins(serve_portal(), 12)
    assert not any(throttled[:10]) and all(throttled[10:]), throttled
    # Behind a trusted proxy each forwarded address is its own client.
    throttled = failed_logins(serve_portal(TP_TRUSTED_PROXIES="127.0.0.1"), 12)
    assert not any(throttled), throttled
