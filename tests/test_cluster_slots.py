"""Redis Cluster readiness of the balance protocol: a Lua script may only touch keys of one hash
slot on a cluster, so every key a script is called with must carry its account's hash tag
``{a<id>}``. Checked twice: on the key builders of ``core.state``, and on the commands the relay
and the worker really send to Redis during a story (read off ``MONITOR``)."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from redis.connection import parse_url
from redis.crc import key_slot

from billing.models import UsageEvent
from core import state

from .conftest import publish_catalog, wait_until
from .test_holds import burst

SCRIPTS = {
    hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest(): name
    for name, source in (
        ("reserve", state.RESERVE),
        ("settle", state.SETTLE),
        ("release", state.RELEASE),
        ("post_many", state.POST_MANY),
    )
}


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("account_id", [1, 7, 42, 1234567, "99"])
def test_every_key_of_an_account_is_in_the_slot_of_its_hash_tag(account_id: int | str) -> None:
    expected = slot(f"{{a{account_id}}}")
    keys = [
        state.account(account_id),
        state.account_holds(account_id),
        state.account_unposted(account_id),
        state.hold_times(account_id),
        state.key_cap(account_id, 3, "2026-12"),
        state.key_cap(account_id, 3, "total"),
        state.no_cap(account_id),
        state.rate_window(account_id, 3, "r", 29_000_000),
        state.rate_window(account_id, 3, "t", 29_000_000),
        state.rate_window(account_id, 0, "t", 0),
    ]
    assert {slot(key) for key in keys} == {expected}
    # The worker finds an account's hold times by pattern and reads the account back from them.
    assert state.account_of_hold_times(state.hold_times(account_id)) == str(account_id)


def test_accounts_spread_over_many_slots() -> None:
    """The tag is per account, not one for all: a cluster shares the accounts out."""
    assert len({slot(state.account(n)) for n in range(1, 1001)}) > 900


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Path]:
    """Every command the test's Redis server receives, as ``redis-cli monitor`` prints it."""
    options: dict[str, Any] = parse_url(settings.REDIS_URL)  # type: ignore[no-untyped-call]
    out = tmp_path / "monitor.log"
    process = subprocess.Popen(
        [
            *("redis-cli", "-h", str(options.get("host", "127.0.0.1"))),
            *("-p", str(options.get("port", 6379)), "monitor"),
        ],
        stdout=open(out, "wb"),  # handed to the child process
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: out.read_text().startswith("OK"), timeout=10)
    try:
        yield out
    finally:
        process.terminate()
        process.wait(10)


def script_calls(log: Path, db: int) -> list[tuple[str, list[str]]]:
    """(script name, keys) of every EVALSHA of ours the monitor saw on database ``db``."""
    calls = []
    for line in log.read_text(errors="replace").splitlines():
        if f"[{db} " not in line or '"EVAL' not in line.upper():
            continue
        words = shlex.split(line.split("] ", 1)[1])
        if words[0].upper() != "EVALSHA":
            continue  # an EVAL (after NOSCRIPT) loads the script: the next calls are EVALSHA
        sha, numkeys = words[1], int(words[2])
        if sha in SCRIPTS:
            calls.append((SCRIPTS[sha], words[3 : 3 + numkeys]))
    return calls


@pytest.mark.usefixtures("catalog")
def test_the_scripts_really_sent_keep_their_keys_in_one_slot(
    monitor: Path, relay: Any, worker: Any, alice: Any, alice_key: str
) -> None:
    publish_catalog(relay)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    url = f"{relay.base_url}/chat/completions"
    assert burst(url, alice_key, body, 3) == [200] * 3  # reserve, settle; the worker posts
    failed = burst(url, alice_key, body, 1, **{"x-demo-error": "400"})  # reserve, release
    assert failed != [200]
    wait_until(lambda: UsageEvent.objects.filter(account=alice.account).count() == 3)

    db = int(parse_url(settings.REDIS_URL).get("db", 0))  # type: ignore[no-untyped-call]
    expected = slot(state.account(alice.account.id))

    def seen() -> list[tuple[str, list[str]]] | None:
        calls = script_calls(monitor, db)
        names = {name for name, _ in calls}
        return calls if {"reserve", "settle", "release", "post_many"} <= names else None

    calls = wait_until(seen, timeout=10)
    for name, keys in calls:
        if name == "post_many" and len(keys) > 2:
            continue  # a batch's accounts in one call: sent only where Redis is one server
        slots = {slot(key) for key in keys}
        assert len(slots) == 1, (name, keys)
        if state.account(alice.account.id) in keys:
            assert slots == {expected}
