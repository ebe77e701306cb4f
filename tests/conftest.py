"""Shared fixtures: the real PostgreSQL (pytest-django's test database), the real Redis, the
demo upstream, the relay as its own process, a real Celery worker consuming the queue, and the
people in the stories (alice, bob and the operator)."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import redis as redis_lib
from hypothesis import settings as hypothesis_settings
from playwright.sync_api import Browser, Page, sync_playwright

if TYPE_CHECKING:
    from django.test import Client

ROOT = Path(__file__).resolve().parent.parent

# Property and fuzz tests draw the same examples on every run of the suite ("ci"), so CI is
# reproducible; `make fuzz` draws new ones on each run, to look for what the fixed set misses.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("fuzz", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


T = TypeVar("T")


def run_apart(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())`` on an event loop of a thread of its own (the session's browser
    tests leave Playwright's loop running on the main thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(main())).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def relay_redis(**options: Any) -> redis_lib.Redis:
    """A client of the relay's Redis (REDIS_URL): a cluster client under TP_REDIS_CLUSTER (see
    tests/redis_cluster.py), which answers the same commands."""
    from django.conf import settings

    from lib.redis import connect

    return connect(settings.REDIS_URL, cluster=settings.TP_REDIS_CLUSTER, **options)


@pytest.fixture(scope="session", autouse=True)
def clean_redis(django_db_setup: Any) -> None:
    """The test Redis starts empty (keys, balances, the Celery queue, the cache; on a cluster
    every master, and the plain Redis of the broker and the cache)."""
    from django.conf import settings

    relay_redis().flushdb()
    for url in {settings.CELERY_BROKER_URL, settings.CACHE_URL} - {settings.REDIS_URL}:
        redis_lib.Redis.from_url(url).flushdb()


@pytest.fixture(autouse=True)
def clean_cache(clean_redis: None) -> None:
    """Each test starts with an empty Django cache (allauth's rate-limit counters live there,
    and one test's failed logins must not lock the next test's user out)."""
    from django.conf import settings

    cache = redis_lib.Redis.from_url(settings.CACHE_URL)
    names = list(cache.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*", count=1000))
    if names:
        cache.delete(*names)
    # Nor may one test's failing upstreams leave a route's circuit breaker open for the next
    # (the session's relay refreshes its view of them every second).
    raw = relay_redis()
    names = list(raw.scan_iter(match="tp:{breakers}*", count=1000))
    if names:
        raw.delete(*names)


@pytest.fixture(scope="session")
def redis_client() -> redis_lib.Redis:
    return relay_redis(decode_responses=True)


@pytest.fixture(scope="session")
def demo_upstream() -> Iterator[str]:
    from simulators.llm import start_in_thread

    server = start_in_thread(host="127.0.0.1", port=0)
    yield server.base_url
    server.stop()


@pytest.fixture
def catalog(settings: Any, demo_upstream: str, transactional_db: None) -> None:
    """The catalog loaded and published, every model answered by the demo upstream."""
    from django.core.management import call_command

    settings.TP_DEMO_UPSTREAM_URL = demo_upstream
    call_command("loadcatalog", stdout=open(os.devnull, "w"))


@dataclass
class RelayProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    spool_dir: Path
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_relay(tmp_path: Path, **env: str) -> RelayProcess:
    from django.conf import settings

    port = free_port()
    spool = tmp_path / f"spool-{port}"
    environ = {
        **os.environ,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "TP_KEY_PEPPER": settings.TP_KEY_PEPPER.decode(),
        "TP_SECRETS_KEYS": ",".join(settings.TP_SECRETS_KEYS),
        "TP_SPOOL_DIR": str(spool),
        **env,
    }
    log_path = tmp_path / f"relay-{port}.log"
    log = open(log_path, "wb")  # handed to the child process
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "relay", "--port", str(port), "--log-level", "info"],
        cwd=ROOT,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    relay = RelayProcess(f"http://127.0.0.1:{port}/v1", process, spool, log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"relay exited at start-up: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(up, timeout=20)
    return relay


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start at will: fault tests
    never touch the shared one. ``persist`` keeps every write across a stop (as a production
    broker with persistence would); ``kill`` stops it with SIGKILL, as a crash."""

    def __init__(
        self, directory: Path, *extra: str, persist: bool = False, kill: bool = False
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.extra = extra
        self.persist = persist
        self.kill = kill
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
            + ["--bind", "127.0.0.1", "--dir", str(self.directory), "--save", ""]
            + (durability or ["--appendonly", "no"])
            + list(self.extra),
            stdout=subprocess.DEVNULL,
        )
        wait_until(self._up, timeout=10)

    def _up(self) -> bool:
        try:
            with redis_lib.Redis(port=self.port, socket_timeout=0.5) as r:
                r.ping()
                return True
        except redis_lib.AuthenticationError:
            return True  # up, and wants a password
        except redis_lib.RedisError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if self.kill else signal.SIGTERM)
            self.process.wait(10)


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory, clean_redis: None) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path_factory.mktemp("relay"))
    yield process
    process.stop()


@pytest.fixture
def worker(transactional_db: None) -> Iterator[Any]:
    """A real Celery worker in a thread, consuming the real Redis queue."""
    from celery.contrib.testing.worker import start_worker

    from portal.celery import app

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def publish_catalog(relay: RelayProcess) -> None:
    """Publishes the catalog and waits until the relay has reloaded it (on the pub/sub message).

    Routes, prices and upstream URLs cannot be seen from outside a relay, so this publication
    also gives one model an alias that no earlier one had: a relay that answers to that alias
    holds this publication, since it reloads the catalog whole."""
    import urllib.error
    import urllib.request

    from catalog.models import Model
    from catalog.sync import publish, snapshot

    marker = f"published-{time.time_ns()}"
    model = Model.objects.get(id=next(iter(snapshot()["models"])))
    Model.objects.filter(pk=model.pk).update(aliases=[*model.aliases, marker])
    publish()

    def reloaded() -> bool:
        try:
            with urllib.request.urlopen(f"{relay.base_url}/models/{marker}", timeout=5):
                return True
        except urllib.error.HTTPError:
            return False

    wait_until(reloaded)


# ---- the people in the stories ----------------------------------------------------------------
#
# Made as an operator makes people (`manage.py adduser`, `manage.py credit`), each verified and
# signing in with PASSWORD:
#
# - alice, a customer with $10 on her balance (ALICE_STARTS_WITH): most stories are hers;
# - bob, another customer, who has paid nothing ($0): he must never see or touch anything of
#   alice's, so that a leak between accounts is a one-line test;
# - operator, who runs the site: staff and superuser, for the admin.
#
# A story that needs other money says so in the test, e.g. ``credit(alice, 40)``.

PASSWORD = "correct horse battery staple"
ALICE_STARTS_WITH = Decimal("10")


def credit(user: Any, amount: Decimal | int | str) -> None:
    """An operator's adjustment to the user's balance, by `manage.py credit` (negative debits)."""
    from django.core.management import call_command

    call_command("credit", user.email, str(amount), stdout=io.StringIO())


def signed_in(user: Any, *, csrf: bool = False) -> Client:
    """A browser of the user's, signed in through the login form with PASSWORD (a fresh
    authentication, as the form records it); with ``csrf``, one that sends no CSRF token
    unless the test does."""
    from django.test import Client
    from django.urls import reverse

    client = Client()
    response = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    if csrf:
        strict = Client(enforce_csrf_checks=True)
        strict.cookies = client.cookies
        return strict
    return client


def reauthenticated(client: Client) -> Client:
    """Confirms the password again, as sensitive pages ask."""
    from django.urls import reverse

    response = client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    assert response.status_code == 302
    return client


@pytest.fixture
def make_user(transactional_db: None) -> Any:
    """Makes a verified user with ``manage.py adduser`` (``staff``: ``--staff``, a superuser)."""
    from django.core.management import call_command

    def make(email: str, password: str = PASSWORD, *, staff: bool = False) -> Any:
        from django.contrib.auth import get_user_model

        extra = ["--staff"] if staff else []
        call_command("adduser", email, "--password", password, *extra, stdout=io.StringIO())
        return get_user_model().objects.get(email=email)

    return make


@pytest.fixture
def alice(make_user: Any) -> Any:
    """A customer with $10 (ALICE_STARTS_WITH), credited by the operator."""
    user = make_user("alice@example.com")
    credit(user, ALICE_STARTS_WITH)
    return user


@pytest.fixture
def alice_key(alice: Any) -> str:
    """The secret of alice's key "laptop" (tp-sk-...), as the page shows it to her once."""
    from keys.services import issue_key

    _, secret = issue_key(account=alice.account, name="laptop")
    return secret


@pytest.fixture
def alice_client(alice: Any) -> Client:
    """Alice's browser, signed in (by her session alone, without the login form)."""
    from django.test import Client

    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob(make_user: Any) -> Any:
    """Another customer, with nothing on his balance."""
    return make_user("bob@example.com")


@pytest.fixture
def operator(make_user: Any) -> Any:
    """The operator: staff and superuser, made with ``manage.py adduser --staff``."""
    return make_user("operator@example.com", staff=True)


# ---- browser tests: Debian's Chromium driven by Playwright ------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(base_url=None)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
