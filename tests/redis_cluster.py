"""A local Redis Cluster for tests: three masters on free ports, no replicas, every slot
assigned (``redis-server --cluster-enabled``, ``redis-cli --cluster create``).

Run as a program, it starts one and runs pytest against it, the relay's state on the cluster
and Celery's broker and Django's cache on a plain Redis (as production must)::

    python -m tests.redis_cluster [pytest arguments]

``make test`` runs the relay's billing and limit tests this way (see the Makefile)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_lib

from .conftest import PrivateRedis, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent

# What `make test` runs on the cluster: every test that moves money or counts a limit through
# the relay (holds, settling, releasing, caps, rate windows, key records and the catalog).
SUITE = [
    "tests/test_relay.py",
    "tests/test_relay_limits.py",
    "tests/test_holds.py",
    "tests/test_relay_anthropic.py",
    "tests/test_relay_prices.py",
    "tests/test_keys.py",
    "tests/test_relay_on_cluster.py",
]


class Cluster:
    def __init__(self, nodes: list[PrivateRedis]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def client(self, node: PrivateRedis) -> redis_lib.Redis:
        return redis_lib.Redis(port=node.port, decode_responses=True)

    def ids(self) -> dict[int, str]:
        """Port of each master: its node id."""
        return {n.port: str(self.client(n).execute_command("CLUSTER", "MYID")) for n in self.nodes}

    def owner(self, slot: int) -> PrivateRedis:
        for start, end, master, *_ in self.client(self.nodes[0]).execute_command(
            "CLUSTER", "SLOTS"
        ):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"slot {slot} has no master")


def cluster_port() -> int:
    """A free port a cluster node can use: at most 55535, its bus port (+10000) free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@contextmanager
def running_cluster(directory: Path) -> Iterator[Cluster]:
    """Three empty masters, no replicas, every slot assigned; stopped on exit."""
    nodes = []
    try:
        for i in range(3):
            node_dir = directory / f"node{i}"
            node_dir.mkdir()
            node = PrivateRedis(
                node_dir,
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                # A master that stops answering is marked failed after a second (not 15):
                # readiness tests wait on it.
                *("--cluster-node-timeout", "1000"),
            )
            node.port = cluster_port()
            node.start()
            nodes.append(node)
        subprocess.run(
            [
                *(shutil.which("redis-cli") or "redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{n.port}" for n in nodes),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        made = Cluster(nodes)

        def ready() -> bool:
            return all(
                "cluster_state:ok" in str(made.client(n).execute_command("CLUSTER", "INFO"))
                for n in nodes
            )

        wait_until(ready, timeout=20)
        yield made
    finally:
        for node in nodes:
            node.stop()


def main(argv: list[str]) -> int:
    """Runs pytest with ``argv`` (and :data:`SUITE` unless ``argv`` names tests) with the
    relay's Redis on a fresh cluster."""
    plain = os.environ.get("TP_TEST_PLAIN_REDIS_URL", "redis://127.0.0.1:6379/14")
    with (
        tempfile.TemporaryDirectory(prefix="tp-cluster-") as tmp,
        running_cluster(Path(tmp)) as cluster,
    ):
        env = {
            **os.environ,
            "REDIS_URL": cluster.url,
            "TP_REDIS_CLUSTER": "1",
            "CELERY_BROKER_URL": plain,
            "CACHE_URL": plain,
        }
        print(f"Redis Cluster at {cluster.url} (3 masters); broker and cache at {plain}")
        sys.stdout.flush()
        paths = [a for a in argv if a.startswith("tests")]
        return subprocess.call(
            [sys.executable, "-m", "pytest", *argv, *([] if paths else SUITE)], cwd=ROOT, env=env
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
