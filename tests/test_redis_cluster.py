"""The balance protocol on a real Redis Cluster (three masters on free ports): the relay's
cluster script client (relay.cluster) routes every script call to the master of its account's
slot, follows MOVED and ASK, and answers exactly as the single Redis does — holds, settling,
releasing, spending caps and requests-per-minute windows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from redis.cluster import RedisCluster
from redis.crc import key_slot

from catalog.sync import publish
from core import state
from relay.cluster import ClusterScriptClient
from relay.scripts import Script, ScriptClient

from .conftest import start_relay, wait_until
from .redis_cluster import Cluster, running_cluster
from .test_readiness import probe
from .test_relay_redis import run

ACCOUNTS = range(990_201, 990_231)  # thirty accounts: their slots fall on every master
SET = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three empty masters, no replicas, every slot assigned."""
    with running_cluster(tmp_path) as made:
        yield made


def story(client: ScriptClient | ClusterScriptClient, writer: Any, accounts: range) -> list[Any]:
    """For each account: $1000 nano-dollars posted, a key with a 1000 cap and 2 requests a
    minute; two holds, one refused for the balance, one for the rate, one settled, one released.
    Returns every script's answer and the figures left in Redis; closes ``client``."""
    reserve, settle, release = (
        Script(client, source) for source in (state.RESERVE, state.SETTLE, state.RELEASE)
    )

    async def go() -> list[Any]:
        out: list[Any] = []
        for account in accounts:
            cap = state.key_cap(account, 1, "2026-12")
            rpm = state.rate_window(account, 1, "r", 1)
            tpm = state.rate_window(account, 1, "t", 1)
            writer.hset(state.account(account), "posted", 1000)
            keys = [state.account(account), state.account_holds(account)]
            keys += [state.hold_times(account), cap, rpm, tpm]
            for rid, amount in (("a", 600), ("b", 600), ("c", 300), ("d", 10)):
                args = [rid, amount, 1, 1000, 60, 2, -1, 10, 120]
                out.append(await reserve(keys=keys, args=args))
            unposted = state.account_unposted(account)
            out.append(
                await settle(
                    keys=[keys[0], keys[1], unposted, keys[2], cap, tpm], args=["a", 450, -2]
                )
            )
            out.append(await release(keys=keys[:4], args=["c"]))
            out.append(writer.hgetall(state.account(account)))
            out.append(writer.hgetall(cap))
            out.append(writer.hgetall(unposted))
            out.append(writer.get(rpm))
        await client.aclose()
        return out

    return run(go)


def forget(writer: Any, accounts: range) -> None:
    for account in accounts:
        for key in (
            state.account(account),
            state.account_holds(account),
            state.account_unposted(account),
            state.hold_times(account),
            state.key_cap(account, 1, "2026-12"),
            state.rate_window(account, 1, "r", 1),
            state.rate_window(account, 1, "t", 1),
        ):
            writer.delete(key)


@pytest.fixture
def single_redis_answers() -> list[Any]:
    """The same story on the test's single Redis, as the relay runs it today."""
    writer = redis_lib.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    forget(writer, ACCOUNTS)
    try:
        return story(ScriptClient(settings.REDIS_URL), writer, ACCOUNTS)
    finally:
        forget(writer, ACCOUNTS)


def test_the_balance_protocol_answers_on_a_cluster_as_on_one_redis(
    cluster: Cluster, single_redis_answers: list[Any]
) -> None:
    client = ClusterScriptClient(cluster.url)
    writer = RedisCluster.from_url(cluster.url, decode_responses=True)
    answers = story(client, writer, ACCOUNTS)
    assert answers == single_redis_answers
    # Holds: a and c taken, b refused (balance: 0), d refused (requests per minute: -3); a
    # settled at 450, c released.
    assert [answer[0] for answer in answers[:4]] == [1, 0, 1, -3]
    assert answers[6] == {"posted": "1000", "held": "0", "unposted": "450"}
    # The accounts really were spread: every master served some of them.
    assert {client.slots[key_slot(state.account(a).encode())] for a in ACCOUNTS} == {
        ("127.0.0.1", n.port) for n in cluster.nodes
    }


def test_a_stale_slot_map_is_corrected_by_moved_replies(
    cluster: Cluster, single_redis_answers: list[Any]
) -> None:
    client = ClusterScriptClient(cluster.url)
    first = ("127.0.0.1", cluster.nodes[0].port)
    client.slots = [first] * len(client.slots)  # as if every slot had moved since
    writer = RedisCluster.from_url(cluster.url, decode_responses=True)
    assert story(client, writer, ACCOUNTS) == single_redis_answers
    fresh = ClusterScriptClient(cluster.url)

    async def read_map() -> None:
        await fresh.refresh()
        await fresh.aclose()

    run(read_map)
    assert client.slots == fresh.slots


def test_a_slot_being_migrated_is_followed_with_ask(cluster: Cluster) -> None:
    key = state.account(990_299)
    slot = int(key_slot(key.encode()))
    source = cluster.owner(slot)
    target = next(n for n in cluster.nodes if n is not source)
    ids = cluster.ids()
    cluster.client(target).execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port]
    )
    cluster.client(source).execute_command(
        "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port]
    )
    client = ClusterScriptClient(cluster.url)

    async def set_key() -> Any:
        try:
            return await Script(client, SET)(keys=[key], args=["moved"])
        finally:
            await client.aclose()

    # Not on the source any more: the source answers ASK, the call is run on the target.
    assert run(set_key) == b"OK"
    assert cluster.client(source).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert cluster.client(target).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    assert client.slots[slot] == ("127.0.0.1", source.port)  # still the source's until done


@pytest.mark.usefixtures("catalog")
def test_a_relay_on_a_cluster_is_ready_only_while_every_slot_is_served(
    cluster: Cluster, tmp_path: Path, redis_client: Any
) -> None:
    publish()
    RedisCluster.from_url(cluster.url).set(state.CATALOG, redis_client.get(state.CATALOG))
    relay = start_relay(
        tmp_path,
        REDIS_URL=cluster.url,
        TP_REDIS_CLUSTER="1",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    ready = f"{relay.base_url.removesuffix('/v1')}/readyz"
    try:
        assert probe(ready) == (
            200,
            {"status": "ready", "checks": {"redis": True, "catalog": True}},
        )
        lost = cluster.nodes[-1]  # not the seed: the relay still reaches the seed
        lost.stop()
        wait_until(lambda: probe(ready)[0] == 503, timeout=15)
        assert probe(ready)[1]["checks"] == {"redis": False, "catalog": True}
        lost.start()  # its nodes.conf brings it back with its slots (not its keys: the relay
        # serves the catalog it loaded, whichever master held it)
        wait_until(lambda: probe(ready)[0] == 200, timeout=20)
    finally:
        relay.stop()
