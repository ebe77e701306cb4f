"""TokenPapa relay benchmark: direct vs relay vs LiteLLM vs Portkey (and the relay under granian).

One command (``make bench`` or ``.venv/bin/python tests/bench/run.py``) starts everything it
measures on 127.0.0.1, runs interleaved rounds so that machine noise hits every target alike,
prints tables and a summary with PASS/MISS labels (figures, not assertions), writes the figures
to ``var/bench/results-<timestamp>.json`` and stops everything it started. See
``tests/bench/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
import stack
import stats
from stack import ROOT

HERE = Path(__file__).resolve().parent
BENCH_DIR = ROOT / "var" / "bench"
LOG_DIR = BENCH_DIR / "logs"
PG_ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "tokenpapa_bench"
REDIS_DB = 7  # the benchmark's own Redis database, flushed at the start of every run
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
PEPPER = "tokenpapa-bench-pepper"
# The Fernet key provider API keys are encrypted with (base64 of 32 fixed bytes: not a secret).
SECRETS_KEYS = "dG9rZW5wYXBhLWJlbmNoLXNlY3JldHMta2V5LTAwMDE="
EMAIL = "bench@example.com"
PASSWORD = "bench-password-not-secret"
# A catalog model whose upstream name is in LiteLLM's built-in price map ("openai/gpt-4o"):
# LiteLLM prices it without per-request custom-pricing registration (which rebuilds its whole
# price map on every request) and without its per-request "zero cost" diagnostic.
PREFERRED_MODEL = "gpt-4o"
LITELLM_MASTER_KEY = "sk-bench-master-key"
LITELLM_SPEC = "litellm[proxy]"
# Portkey's open-source AI gateway (Node.js), pinned: its start-up and routing below were read
# from this version's build/start-server.js.
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
# Transitive pins written to the throwaway folder's package.json ("overrides"). npm resolves
# the gateway's "@hono/node-server": "^1.3.3" to the newest 1.x, and from 1.14.2 on that
# package keeps a fetch() response's immutable Headers when a Response is built from it, so
# every stream through the gateway on Node fails with "TypeError: immutable" (HTTP 500;
# Portkey-AI/gateway issue 1389, open). 1.14.1 is the last release that copies them;
# @hono/node-ws 1.3 requires @hono/node-server >= 1.19, 1.2.0 accepts 1.14.
PORTKEY_OVERRIDES = {"@hono/node-server": "1.14.1", "@hono/node-ws": "1.2.0"}
# Portkey drops a client's other headers unless they are listed in x-portkey-forward-headers.
PORTKEY_FORWARD = (
    "x-demo-latency-ms",
    "x-demo-completion-tokens",
    "x-demo-chunk-delay-ms",
    "x-demo-chunks",
)
PROMPT = "Say hello in one short sentence."

# Targets (PASS/MISS labels, not assertions).
GOAL_ADDED_P50_US = 1_000
GOAL_ADDED_P99_US = 2_000
GOAL_RPS_RATIO = 10.0
# Issue 16: at concurrency 32 against an upstream that answers at once, at least a third of
# the requests per second the upstream serves when called directly.
GOAL_CON32_SHARE = 1 / 3
CON32 = 32
GOAL_STREAM_TTFB_P99_US = 3_000
GOAL_RSS_SLOPE_MIB_MIN = 1.0
SWEEP_ADDED_P99_LIMIT_US = 10_000
SWEEP_ERROR_LIMIT = 0.001

RELAY = "relay"
GRANIAN = "relay-granian"
LITELLM = "litellm"
PORTKEY = "portkey"
DIRECT = "direct"
ALL_TARGETS = (DIRECT, RELAY, GRANIAN, LITELLM, PORTKEY)
COMPETITORS = (LITELLM, PORTKEY)  # the other proxies, measured like the relay
PHASES = ("con1", "con32", "sweep", "stream", "cpu", "soak", "profile")

FULL = {
    "rounds": 10,
    "requests": 200,
    "con32_rounds": 5,
    "con32_seconds": 5.0,
    "levels": "1,8,32,64,128,256",
    "sweep_seconds": 8.0,
    "sweep_warmup": 1.0,
    "stream_rounds": 5,
    "streams": 32,
    "stream_concurrency": 16,
    "cpu_requests": 5000,
    "cpu_seconds": 60.0,
    "soak_minutes": 10.0,
    "soak_interval": 10.0,
    "soak_warmup": 60.0,
    "profile_seconds": 20.0,
}
QUICK = {
    "rounds": 3,
    "requests": 100,
    "con32_rounds": 3,
    "con32_seconds": 2.0,
    "levels": "1,32,128",
    "sweep_seconds": 2.0,
    "sweep_warmup": 0.5,
    "stream_rounds": 2,
    "streams": 8,
    "stream_concurrency": 8,
    "cpu_requests": 800,
    "cpu_seconds": 6.0,
    "soak_minutes": 0.5,
    "soak_interval": 5.0,
    "soak_warmup": 10.0,
    "profile_seconds": 10.0,
}


def say(message: str = "") -> None:
    print(message, flush=True)


# ---- command line ----


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (quick/full defaults are in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tests/bench/run.py",
        description="Benchmark the relay against the demo upstream called directly and against "
        "the LiteLLM proxy and Portkey's AI gateway (and the relay under granian), all on "
        "127.0.0.1, offline. Prints tables and a summary; writes "
        "var/bench/results-<timestamp>.json. Defaults in brackets are for a full run / --quick.",
        formatter_class=_Help,
    )
    a = p.add_argument
    a("--quick", action="store_true", help="short run (~3 min) for development")
    a(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma-separated subset of " + ", ".join(ALL_TARGETS),
    )
    a("--phases", default="con1,con32,sweep,stream,cpu,soak", help="subset of " + ", ".join(PHASES))
    a("--profile", action="store_true", help="also run the 'profile' phase (py-spy on the relay)")
    a("--no-litellm", action="store_true", help="skip LiteLLM (no install, no start)")
    a("--no-portkey", action="store_true", help="skip Portkey's gateway (no install, no start)")
    a("--no-granian", action="store_true", help="skip the relay under granian")
    a(
        "--no-worker",
        action="store_true",
        help=f"diagnosis: start no Celery worker (usage events wait in Redis db {REDIS_DB}), to "
        "see how much the billing pipeline's CPU competes with the relay on this machine",
    )
    a("--litellm-spec", default=LITELLM_SPEC, help="pip requirement for the LiteLLM venv")
    a("--portkey-spec", default=PORTKEY_SPEC, help="npm package spec for Portkey's gateway")
    a("--install-timeout", type=float, default=900, help="seconds allowed for a pip/npm install")
    a("--clients", type=int, default=1, help="load-generator processes (split the concurrency)")
    a("--timeout", type=float, default=30.0, help="client timeout per request (s)")
    g = p.add_argument_group("concurrency 1 (plain requests, upstream latency 0)")
    g.add_argument("--rounds", type=int, help="interleaved rounds [10 / 3]")
    g.add_argument("--requests", type=int, help="measured requests per round and target [200/100]")
    g.add_argument(
        "--con1-samples",
        type=Path,
        metavar="DIR",
        help="diagnosis: write each round's latencies (microseconds, in the order the requests "
        "were sent) to DIR/con1-<target>-<round>.json, to see where a p99 comes from",
    )
    g = p.add_argument_group("concurrency 32 (plain requests, upstream latency 0)")
    g.add_argument("--con32-rounds", type=int, help="interleaved rounds [5 / 3]")
    g.add_argument("--con32-seconds", type=float, help="measured seconds per target [5 / 2]")
    g = p.add_argument_group("concurrency sweep (plain requests, upstream latency --sweep-latency)")
    g.add_argument("--levels", help="concurrency levels [1,8,32,64,128,256 / 1,32,128]")
    g.add_argument("--sweep-seconds", type=float, help="measured seconds per cell [8 / 2]")
    g.add_argument("--sweep-warmup", type=float, help="unmeasured seconds per cell [1 / 0.5]")
    g.add_argument("--sweep-latency-ms", type=float, default=20.0, help="upstream latency (ms)")
    g = p.add_argument_group("streaming")
    g.add_argument("--stream-rounds", type=int, help="interleaved rounds [5 / 2]")
    g.add_argument("--streams", type=int, help="streams per round and target [32 / 8]")
    g.add_argument("--stream-concurrency", type=int, help="streams at once [16 / 8]")
    g.add_argument("--stream-chunks", type=int, default=64, help="content chunks per stream")
    g.add_argument("--stream-delay-ms", type=float, default=20.0, help="delay between chunks")
    g = p.add_argument_group("CPU per request (upstream latency --sweep-latency)")
    g.add_argument("--cpu-requests", type=int, help="measured requests per target [5000 / 800]")
    g.add_argument("--cpu-seconds", type=float, help="at most this long per target [60 / 6]")
    g.add_argument("--cpu-concurrency", type=int, default=32, help="concurrency of the CPU run")
    g = p.add_argument_group("RSS soak (relay under uvicorn)")
    g.add_argument("--soak-minutes", type=float, help="soak length incl. warm-up [10 / 0.5]")
    g.add_argument("--soak-interval", type=float, help="seconds between RSS samples [10 / 5]")
    g.add_argument("--soak-warmup", type=float, help="seconds left out of the slope [60 / 10]")
    g.add_argument("--soak-concurrency", type=int, default=32, help="plain requests at once")
    g.add_argument("--soak-streams", type=int, default=4, help="streams at once during the soak")
    g = p.add_argument_group("profile (py-spy on the relay; with --profile)")
    g.add_argument("--profile-targets", default=RELAY, help="targets to sample, comma-separated")
    g.add_argument("--profile-seconds", type=float, help="seconds of sampling [20 / 10]")
    g.add_argument("--profile-concurrency", type=int, default=16, help="concurrency while sampled")
    args = p.parse_args(argv)

    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.level_list = [int(x) for x in str(args.levels).split(",") if x.strip()]
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.target_list) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    if DIRECT not in args.target_list:
        args.target_list.insert(0, DIRECT)  # every "added" figure is relative to it
    if args.no_litellm and LITELLM in args.target_list:
        args.target_list.remove(LITELLM)
    if args.no_portkey and PORTKEY in args.target_list:
        args.target_list.remove(PORTKEY)
    if args.no_granian and GRANIAN in args.target_list:
        args.target_list.remove(GRANIAN)
    args.phase_list = [x.strip() for x in args.phases.split(",") if x.strip()]
    args.profile_target_list = [x.strip() for x in args.profile_targets.split(",") if x.strip()]
    if args.profile and "profile" not in args.phase_list:
        args.phase_list.append("profile")
    bad = set(args.phase_list) - set(PHASES)
    if bad:
        p.error(f"unknown phase(s): {', '.join(sorted(bad))}")
    if args.clients < 1:
        p.error("--clients must be at least 1")
    return args


# ---- load generators ----


class LoadGens:
    """``--clients`` loadgen.py processes; a command's concurrency and count are split among
    them and their answers merged."""

    def __init__(self, procs: stack.Procs, count: int) -> None:
        self.clients: list[tuple[stack.Proc, queue.Queue[bytes]]] = []
        for i in range(count):
            proc = procs.start(
                f"loadgen-{i}",
                [stack.python(), str(HERE / "loadgen.py")],
                dict(os.environ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            lines: queue.Queue[bytes] = queue.Queue()
            threading.Thread(target=self._read, args=(proc, lines), daemon=True).start()
            self.clients.append((proc, lines))
        self.pids = [proc.pid for proc, _ in self.clients]

    @staticmethod
    def _read(proc: stack.Proc, lines: queue.Queue[bytes]) -> None:
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            lines.put(line)
        lines.put(b"")

    def run(
        self,
        jobs: list[dict[str, Any]],
        *,
        wait_s: float,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 0.5,
    ) -> dict[str, Any]:
        n = len(self.clients)
        shares: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for job in jobs:
            conc = int(job.get("concurrency", 1))
            count = job.get("count")
            warm = int(job.get("warmup_count", 0))
            for i in range(n):
                part = dict(job)
                part["concurrency"] = conc // n + (1 if i < conc % n else 0)
                if count is not None:
                    part["count"] = count // n + (1 if i < count % n else 0)
                part["warmup_count"] = warm // n + (1 if i < warm % n else 0)
                if part["concurrency"] > 0 and (count is None or part["count"] > 0):
                    shares[i].append(part)
        start_at = time.monotonic() + 0.2
        busy = []
        for (proc, _), share in zip(self.clients, shares, strict=True):
            if not share:
                continue
            command = {"op": "run", "jobs": share, "start_at": start_at}
            assert proc.popen.stdin is not None
            proc.popen.stdin.write(json.dumps(command).encode() + b"\n")
            proc.popen.stdin.flush()
            busy.append((proc, share))
        deadline = time.monotonic() + wait_s
        replies = []
        for proc, _share in busy:
            lines = dict((p.pid, q) for p, q in self.clients)[proc.pid]
            while True:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} gave no answer within {wait_s:.0f}s")
                try:
                    line = lines.get(timeout=tick_s)
                except queue.Empty:
                    if on_tick:
                        on_tick()
                    continue
                if not line:
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
                reply = json.loads(line)
                if not reply.get("ok"):
                    raise RuntimeError(f"{proc.name}: {reply.get('error')}")
                replies.append(reply)
                break
        return self._merge(jobs, [r["jobs"] for r in replies], replies)

    @staticmethod
    def _merge(
        jobs: list[dict[str, Any]], per_client: list[list[dict[str, Any]]], replies: list[Any]
    ) -> dict[str, Any]:
        merged = []
        for job in jobs:
            name = job.get("name", "")
            parts = [j for client in per_client for j in client if j["name"] == name]
            out: dict[str, Any] = {
                "name": name,
                "ok": sum(p["ok"] for p in parts),
                "completions_in_window": sum(p["completions_in_window"] for p in parts),
                "window_s": max((p["window_s"] for p in parts), default=0.0),
                "errors": {},
            }
            for p in parts:
                for kind, count in p["errors"].items():
                    out["errors"][kind] = out["errors"].get(kind, 0) + count
            for key in ("lat_us", "ttfb_us", "gap_us", "events"):
                out[key] = [v for p in parts for v in p.get(key, [])]
            for key in ("lat_p50_us", "lat_p99_us", "ttfb_p50_us", "ttfb_p99_us"):
                values = [p[key] for p in parts if p.get(key) is not None]
                out[key] = max(values) if values else None  # conservative across clients
            merged.append(out)
        return {
            "jobs": merged,
            "cpu_s": sum(r["cpu_s"] for r in replies),
            "wall_s": max((r["wall_s"] for r in replies), default=0.0),
        }

    def quit(self) -> None:
        for proc, _ in self.clients:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                assert proc.popen.stdin is not None
                proc.popen.stdin.write(b'{"op": "quit"}\n')
                proc.popen.stdin.flush()


# ---- targets and the requests they get ----


@dataclass
class Target:
    name: str
    url: str
    token: str
    model: str
    proc: stack.Proc | None = None  # the proxy process (None: the upstream itself)
    # Sent with every request to this target (Portkey's routing headers).
    headers: dict[str, str] = field(default_factory=dict)
    # Without x-demo-* forwarding, each scenario goes to a demo upstream configured
    # server-wide: LiteLLM names it by model, Portkey by its custom-host header.
    fallback_models: dict[str, str] | None = None
    fallback_hosts: dict[str, str] | None = None
    fallback_upstreams: dict[str, stack.Proc] = field(default_factory=dict)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def upstream_for(self, scenario: str, default: stack.Proc) -> stack.Proc:
        """The demo upstream process that serves ``scenario`` for this target."""
        return self.fallback_upstreams.get(scenario, default)


@dataclass
class Ctx:
    args: argparse.Namespace
    procs: stack.Procs
    upstream: stack.Proc | None = None
    upstream_url: str = ""
    worker: stack.Proc | None = None
    targets: list[Target] = field(default_factory=list)
    lg: LoadGens | None = None
    redis: redis.Redis | None = None
    notes: list[str] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # targets left out for a reason noted
    info: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    upstream_model: str = ""
    model: str = ""
    price: dict[str, str] = field(default_factory=dict)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def note(self, message: str) -> None:
        self.notes.append(message)
        say(f"  note: {message}")


def scenario_headers(args: argparse.Namespace, scenario: str) -> dict[str, str]:
    if scenario == "plain0":
        return {"x-demo-latency-ms": "0", "x-demo-completion-tokens": "16"}
    if scenario == "plain20":
        return {"x-demo-latency-ms": f"{args.sweep_latency_ms:g}", "x-demo-completion-tokens": "16"}
    if scenario == "stream":
        return {
            "x-demo-latency-ms": "0",
            "x-demo-chunk-delay-ms": f"{args.stream_delay_ms:g}",
            "x-demo-completion-tokens": str(args.stream_chunks),
            "x-demo-chunks": str(args.stream_chunks),
        }
    if scenario == "soakstream":
        return {
            "x-demo-latency-ms": "0",
            "x-demo-chunk-delay-ms": f"{args.stream_delay_ms:g}",
            "x-demo-completion-tokens": "16",
            "x-demo-chunks": "16",
        }
    raise ValueError(scenario)


def request_body(model: str, *, stream: bool, max_tokens: int) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body).decode()


def job_for(ctx: Ctx, target: Target, scenario: str, **job: Any) -> dict[str, Any]:
    args = ctx.args
    stream = scenario in ("stream", "soakstream")
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
    headers.update(target.headers)
    model = target.model
    if target.fallback_models is not None:
        model = target.fallback_models[scenario]  # steered server-wide, no x-demo-* headers
    elif target.fallback_hosts is not None:
        headers["x-portkey-custom-host"] = target.fallback_hosts[scenario]  # likewise
    else:
        headers.update(scenario_headers(args, scenario))
    max_tokens = max(64, 2 * args.stream_chunks) if stream else 64
    out = {
        "name": job.pop("name", target.name),
        "url": target.url,
        "headers": headers,
        "body": request_body(model, stream=stream, max_tokens=max_tokens),
        "stream": stream,
        "timeout": args.timeout * (4 if stream else 1),
    }
    if stream:
        out["warmup_body"] = request_body(model, stream=False, max_tokens=max_tokens)
        out["warmup_stream"] = False
    out.update(job)
    return out


def rotated(items: list[Any], k: int) -> list[Any]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def error_rate(res: dict[str, Any]) -> float:
    errors = sum(res["errors"].values())
    total = errors + res["ok"]
    return errors / total if total else 0.0


def errors_text(res: dict[str, Any]) -> str:
    if not res["errors"]:
        return "0"
    return ", ".join(f"{k}: {v}" for k, v in sorted(res["errors"].items()))


# ---- the world: upstream, database, Redis, worker, relays, LiteLLM, Portkey ----


def base_env() -> dict[str, str]:
    drop_prefixes = ("TP_PROVIDER_", "DEMO_UPSTREAM_", "OPENAI_", "ANTHROPIC_", "LITELLM_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


def world_env(upstream_url: str) -> dict[str, str]:
    env = base_env()
    state_dir = BENCH_DIR / "state"
    env.update(
        {
            "DEBUG": "0",
            "SECRET_KEY": "tokenpapa-bench-secret-key-not-secret",
            "TP_KEY_PEPPER": PEPPER,
            "TP_SECRETS_KEYS": SECRETS_KEYS,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "TP_DEMO_UPSTREAM_URL": upstream_url,
            "TP_VAR_DIR": str(state_dir),
            "TP_SPOOL_DIR": str(state_dir / "spool"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def start_upstream(ctx: Ctx, name: str, extra: list[str] | None = None) -> tuple[stack.Proc, str]:
    port = stack.free_port()
    argv = [stack.python(), "-m", "simulators.llm", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--record-limit", "0", *(extra or [])]
    proc = ctx.procs.start(name, argv, base_env())
    stack.wait_ready(proc, f"http://127.0.0.1:{port}/_demo/health", 30)
    return proc, f"http://127.0.0.1:{port}/v1"


def manage(env: dict[str, str], *argv: str, ok_if: str | None = None) -> str:
    done = stack.run_checked([stack.python(), "manage.py", *argv], env, timeout=600)
    if done.returncode != 0:
        if ok_if and ok_if in (done.stderr + done.stdout):
            return done.stdout
        raise RuntimeError(
            f"manage.py {' '.join(argv[:1])} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout


def ensure_database() -> None:
    """A new, empty benchmark database for every run: figures do not depend on how many
    earlier runs left their usage rows behind, nor on an older schema."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        say(f"  created database {BENCH_DB} (empty)")


def usage_rows() -> int | None:
    import psycopg

    try:
        with psycopg.connect(
            f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}", connect_timeout=5
        ) as conn:
            row = conn.execute("SELECT count(*) FROM billing_usageevent").fetchone()
            return int(row[0]) if row else None
    except Exception:
        return None


def setup_world(ctx: Ctx, env: dict[str, str]) -> str:
    """Database, Redis db REDIS_DB, catalog, the bench account with credit and a fresh key."""
    ensure_database()
    assert ctx.redis is not None
    ctx.redis.flushdb()  # db REDIS_DB is the benchmark's own
    steps = time.monotonic()
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "loadcatalog")
    manage(env, "adduser", EMAIL, "--password", PASSWORD, ok_if="already exists")
    manage(env, "credit", EMAIL, "1000000", "--note", "benchmark")
    secret = manage(env, "issuekey", EMAIL, "--name", "bench").strip().splitlines()[-1].strip()
    if not secret.startswith("tp-sk-"):
        raise RuntimeError("issuekey printed no tp-sk- secret")
    manage(env, "syncredis")
    say(f"  database, catalog, account, key and Redis view ready ({time.monotonic() - steps:.1f}s)")
    return secret


def pick_model(ctx: Ctx) -> None:
    """A chat model of the catalog served by the demo upstream, and its upstream name."""
    assert ctx.redis is not None
    raw = ctx.redis.get("tp:catalog")
    models = orjson.loads(raw)["models"] if raw else {}
    candidates = [
        m
        for m in models.values()
        if not m.get("embeddings") and m["routes"] and m["routes"][0].get("demo")
    ]
    if not candidates:
        raise RuntimeError("no chat model of the catalog is routed to the demo upstream")
    chosen = next((m for m in candidates if m["id"] == PREFERRED_MODEL), candidates[0])
    ctx.model = chosen["id"]
    ctx.upstream_model = chosen["routes"][0]["upstream_model"]
    ctx.price = chosen.get("price") or {}


def start_relay(ctx: Ctx, env: dict[str, str], server: str) -> tuple[stack.Proc, str]:
    port = stack.free_port()
    if server == "uvicorn":
        # As in production: uvicorn with httptools, uvloop and the request deadlines.
        argv = [stack.python(), "-m", "serving", "relay", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning"]
        name = RELAY
    else:
        env = dict(env)
        env["PYTHONPATH"] = f"{BENCH_DIR / 'granian-pkgs'}:{env['PYTHONPATH']}"
        argv = [stack.python(), "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "1"]
        argv += ["--no-ws", "--log-level", "warning", "--no-access-log", "relay.app:app"]
        name = GRANIAN
    proc = ctx.procs.start(name, argv, env)
    return proc, f"http://127.0.0.1:{port}"


def ensure_granian(ctx: Ctx) -> bool:
    try:
        done = stack.run_checked([stack.python(), "-c", "import granian"], base_env(), timeout=60)
    except subprocess.TimeoutExpired:
        return False
    if done.returncode == 0:
        ctx.info["granian"] = "from the project's environment"
        return True
    ok, why = stack.ensure_target_dir(
        BENCH_DIR / "granian-pkgs",
        "granian",
        LOG_DIR / "granian-install.log",
        lambda m: say(f"  {m}"),
        ctx.args.install_timeout,
    )
    if not ok:
        ctx.note(f"granian is not available ({why}); the relay runs under uvicorn only")
        return False
    ctx.info["granian"] = "pip --target var/bench/granian-pkgs (PYTHONPATH; .venv untouched)"
    return True


def litellm_config(upstream_url: str, model: str, upstream_model: str, fallbacks: dict) -> str:
    def entry(name: str, api_base: str) -> str:
        return (
            f"  - model_name: {name}\n"
            f"    litellm_params:\n"
            f"      model: openai/{upstream_model}\n"
            f"      api_base: {api_base}\n"
            f"      api_key: demo\n"
        )

    models = entry(model, upstream_url)
    for name, url in fallbacks.items():
        models += entry(name, url)
    return (
        "# Written by tests/bench/run.py: one worker, no callbacks, no retries.\n"
        "model_list:\n"
        f"{models}"
        "litellm_settings:\n"
        "  num_retries: 0\n"
        "  request_timeout: 120\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "  telemetry: false\n"
        "router_settings:\n"
        "  num_retries: 0\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "  forward_client_headers_to_llm_api: true\n"
    )


LITELLM_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.error": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def start_litellm(ctx: Ctx) -> tuple[stack.Proc, str, dict[str, str]] | None:
    venv = BENCH_DIR / "litellm-venv"
    # httptools as for the relay (uvicorn falls back to the pure-Python h11 parser without
    # it) and the OpenTelemetry SDK as in LiteLLM's own image: without it LiteLLM retries a
    # failing import of its OTel module on every request.
    ok, why = stack.ensure_venv(
        venv,
        [ctx.args.litellm_spec, "httptools", "opentelemetry-sdk"],
        LOG_DIR / "litellm-install.log",
        lambda m: say(f"  {m}"),
        ctx.args.install_timeout,
    )
    if not ok:
        ctx.note(f"LiteLLM could not be installed here, so it is left out: {why}")
        return None
    version = stack.run_checked(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        base_env(),
        timeout=120,
    ).stdout.strip()
    ctx.info["litellm"] = version or "?"
    home = BENCH_DIR / "litellm-home"
    home.mkdir(parents=True, exist_ok=True)
    # Ports for the server-wide-configured upstreams used only if LiteLLM does not forward
    # x-demo-* headers (started on demand, see check_targets).
    fallbacks = {f"bench-{s}": stack.free_port() for s in ("plain0", "plain20", "stream")}
    urls = {name: f"http://127.0.0.1:{port}/v1" for name, port in fallbacks.items()}
    config = home / "config.yaml"
    config.write_text(litellm_config(ctx.upstream_url, ctx.model, ctx.upstream_model, urls))
    log_config = home / "log_config.json"
    log_config.write_text(json.dumps(LITELLM_LOG_CONFIG))
    port = stack.free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # Offline: the bundled model cost map, no telemetry; any HTTP(S) request to anything
        # but loopback goes to a closed local port instead of leaving the machine.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1", "--log_config", str(log_config)]
    proc = ctx.procs.start(LITELLM, argv, env, cwd=home)
    return proc, f"http://127.0.0.1:{port}", urls


PORTKEY_DIR = BENCH_DIR / "portkey"
PORTKEY_PACKAGE = "@portkey-ai/gateway"


def start_portkey(ctx: Ctx) -> tuple[stack.Proc, str] | None:
    """Portkey's gateway from a throwaway npm install, one node process on 127.0.0.1."""
    node = shutil.which("node")
    if node is None:
        ctx.note("Portkey's gateway needs node, which is not installed here, so it is left out")
        return None
    ok, why = stack.ensure_npm_dir(
        PORTKEY_DIR,
        ctx.args.portkey_spec,
        PORTKEY_OVERRIDES,
        LOG_DIR / "portkey-install.log",
        lambda m: say(f"  {m}"),
        ctx.args.install_timeout,
    )
    if not ok:
        ctx.note(f"Portkey's gateway could not be installed here, so it is left out: {why}")
        return None
    package_dir = PORTKEY_DIR / "node_modules" / PORTKEY_PACKAGE
    try:
        manifest = json.loads((package_dir / "package.json").read_text())
        bin_field = manifest.get("bin")
        script = bin_field if isinstance(bin_field, str) else next(iter(bin_field.values()))
    except (OSError, ValueError, AttributeError, StopIteration):
        ctx.note(f"Portkey's gateway has no start script in {package_dir}, so it is left out")
        return None
    node_version = stack.run_checked([node, "--version"], base_env(), timeout=30).stdout.strip()
    ctx.info["portkey"] = manifest.get("version", "?")
    ctx.info["portkey_node"] = node_version or "?"
    ctx.info["portkey_pins"] = {
        name: stack.npm_package_version(PORTKEY_DIR, name) for name in PORTKEY_OVERRIDES
    }
    home = BENCH_DIR / "portkey-home"
    home.mkdir(parents=True, exist_ok=True)
    port = stack.free_port()
    env = {
        "PATH": f"{Path(node).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # No console UI routes, no log-stream endpoint; no REDIS_CONNECTION_STRING (no cache
        # backend); nothing else of its configuration is set.
        "NODE_ENV": "production",
        # Node's fetch ignores these (the preloaded node_loopback.mjs keeps the gateway on
        # loopback); set as for LiteLLM in case any library honours them.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    # build/start-server.js reads only --port=N and --headless from its command line and
    # listens on every interface; node_loopback.mjs binds it to 127.0.0.1 and refuses any
    # outgoing connection that is not to loopback.
    argv = [node, "--import", str(HERE / "node_loopback.mjs"), str(package_dir / script)]
    argv += [f"--port={port}", "--headless"]
    proc = ctx.procs.start(PORTKEY, argv, env, cwd=PORTKEY_DIR)
    return proc, f"http://127.0.0.1:{port}"


def portkey_headers(upstream_url: str) -> dict[str, str]:
    """Route a request through Portkey to an OpenAI-compatible host: provider "openai" with a
    custom host (the Authorization header is passed on as the provider's API key)."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream_url,
        "x-portkey-forward-headers": ",".join(PORTKEY_FORWARD),
    }


def check_target(ctx: Ctx, target: Target) -> str | None:
    """One request asking the demo upstream (through the target) for 7 completion tokens."""
    headers = {
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "application/json",
        **target.headers,
        "x-demo-completion-tokens": "7",
        "x-demo-latency-ms": "0",
    }
    body = request_body(target.model, stream=False, max_tokens=64).encode()
    try:
        status, raw = stack.http_post(target.url, body, headers, timeout=60)
    except OSError as exc:
        return f"no answer ({exc})"
    if status != 200:
        return f"HTTP {status}: {raw[:300]!r}"
    try:
        usage = orjson.loads(raw).get("usage") or {}
    except orjson.JSONDecodeError:
        return f"not JSON: {raw[:200]!r}"
    if usage.get("completion_tokens") != 7:
        return "headers-not-forwarded"
    return None


def build_world(ctx: Ctx) -> None:
    args = ctx.args
    say("Setting up (all on 127.0.0.1)")
    ctx.redis = redis.Redis.from_url(REDIS_URL)
    ctx.redis.ping()
    ctx.upstream, ctx.upstream_url = start_upstream(ctx, "upstream")
    say(f"  demo upstream at {ctx.upstream_url}")
    env = world_env(ctx.upstream_url)
    secret = setup_world(ctx, env)
    pick_model(ctx)
    say(f"  model {ctx.model} -> demo upstream model {ctx.upstream_model}")

    if args.no_worker:
        ctx.note(
            f"--no-worker: no Celery worker ran; usage events stayed queued in Redis db {REDIS_DB}"
        )
    litellm: tuple[stack.Proc, str, dict[str, str]] | None = None
    if LITELLM in args.target_list:
        litellm = start_litellm(ctx)  # slow to start: overlap with the rest
        if litellm is None:
            args.target_list.remove(LITELLM)
            ctx.dropped.add(LITELLM)
    portkey: tuple[stack.Proc, str] | None = None
    if PORTKEY in args.target_list:
        portkey = start_portkey(ctx)
        if portkey is None:
            args.target_list.remove(PORTKEY)
            ctx.dropped.add(PORTKEY)
    granian_ok = GRANIAN in args.target_list and ensure_granian(ctx)
    if GRANIAN in args.target_list and not granian_ok:
        args.target_list.remove(GRANIAN)

    ctx.worker = (
        None
        if args.no_worker
        else ctx.procs.start(
            "worker",
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "portal",
                "worker",
                "--concurrency",
                "1",
                "--loglevel",
                "WARNING",
            ],
            env,
            leader_first=True,
        )
    )
    targets = [
        Target(
            DIRECT,
            f"{ctx.upstream_url}/chat/completions",
            "demo",
            ctx.upstream_model,
            None,
        )
    ]
    relay_proc, relay_url = start_relay(ctx, env, "uvicorn")
    stack.wait_ready(relay_proc, f"{relay_url}/healthz", 60)
    targets.append(Target(RELAY, f"{relay_url}/v1/chat/completions", secret, ctx.model, relay_proc))
    if granian_ok:
        g_proc, g_url = start_relay(ctx, env, "granian")
        stack.wait_ready(g_proc, f"{g_url}/healthz", 60)
        targets.append(Target(GRANIAN, f"{g_url}/v1/chat/completions", secret, ctx.model, g_proc))
    if portkey is not None:
        p_proc, p_url = portkey
        pt = Target(
            PORTKEY,
            f"{p_url}/v1/chat/completions",
            "demo",  # passed on to the upstream as the provider's API key
            ctx.upstream_model,
            p_proc,
            headers=portkey_headers(ctx.upstream_url),
        )
        if competitor_ready(ctx, pt, f"{p_url}/", 60):  # "/" answers "AI Gateway says hey!"
            targets.append(pt)
    if litellm is not None:
        l_proc, l_url, fallback_urls = litellm
        ctx.info["litellm_fallback_urls"] = fallback_urls
        say("  waiting for LiteLLM to start (it takes a while)")
        lt = Target(LITELLM, f"{l_url}/v1/chat/completions", LITELLM_MASTER_KEY, ctx.model, l_proc)
        if competitor_ready(ctx, lt, f"{l_url}/health/liveliness", 240):
            targets.append(lt)
    time.sleep(1.0)
    if ctx.worker is not None and not ctx.worker.alive():
        raise RuntimeError(f"the Celery worker exited:\n{ctx.worker.log_tail()}")

    for t in list(targets):
        problem = check_target(ctx, t)
        if problem == "headers-not-forwarded" and t.name in COMPETITORS:
            use_fallback_upstreams(ctx, t)
            problem = None
        if problem is None:
            problem = check_stream(ctx, t)
        if problem and t.name in COMPETITORS:
            drop_competitor(ctx, t, f"it does not answer as expected: {problem}")
            targets.remove(t)
            continue
        if problem:
            raise RuntimeError(f"{t.name} does not answer as expected: {problem}")
        shape = f" ({PROCESS_SHAPE[t.name]})" if t.name in PROCESS_SHAPE else ""
        say(f"  {t.name:<14} ready at {t.url}{shape}")
    ctx.targets = [t for name in args.target_list for t in targets if t.name == name]
    ctx.lg = LoadGens(ctx.procs, args.clients)


COMPETITOR_LABEL = {LITELLM: "LiteLLM", PORTKEY: "Portkey's gateway"}
COMPETITOR_SHORT = {LITELLM: "LiteLLM", PORTKEY: "Portkey"}
# How many processes serve each target (printed at start-up and in the summary).
PROCESS_SHAPE = {
    RELAY: "1 uvicorn process",
    GRANIAN: "1 granian worker",
    LITELLM: "1 worker, --num_workers 1",
    PORTKEY: "1 node process: Node runs the gateway's JavaScript on one thread",
}


def drop_competitor(ctx: Ctx, target: Target, why: str) -> None:
    """A proxy we compare with failed to start or to answer: note it and go on without it."""
    ctx.note(f"{COMPETITOR_LABEL[target.name]} is left out: {why}")
    ctx.dropped.add(target.name)
    if target.proc is not None:
        target.proc.stop()
    if target.name in ctx.args.target_list:
        ctx.args.target_list.remove(target.name)


def competitor_ready(ctx: Ctx, target: Target, url: str, timeout: float) -> bool:
    assert target.proc is not None
    try:
        stack.wait_ready(target.proc, url, timeout)
    except RuntimeError as exc:
        drop_competitor(ctx, target, f"it did not start: {exc}")
        return False
    return True


def check_stream(ctx: Ctx, target: Target) -> str | None:
    """One short stream through the target: HTTP 200 and SSE events up to ``[DONE]``."""
    job = job_for(ctx, target, "stream")
    headers = dict(job["headers"])
    if target.fallback_models is None and target.fallback_hosts is None:
        headers.update(
            {"x-demo-chunk-delay-ms": "0", "x-demo-completion-tokens": "3", "x-demo-chunks": "3"}
        )
    try:
        status, raw = stack.http_post(target.url, job["body"].encode(), headers, timeout=60)
    except OSError as exc:
        return f"stream: no answer ({exc})"
    if status != 200:
        return f"stream: HTTP {status}: {raw[:300]!r}"
    if b"data: [DONE]" not in raw:
        return f"stream: no [DONE] event: {raw[-300:]!r}"
    return None


FALLBACK_SCENARIOS = {
    "plain0": "bench-plain0",
    "plain20": "bench-plain20",
    "stream": "bench-stream",
    "soakstream": "bench-stream",
}


def use_fallback_upstreams(ctx: Ctx, target: Target) -> None:
    """A competitor did not pass x-demo-* on: give it upstreams configured server-wide instead
    (LiteLLM: models of its config pointing at them; Portkey: a custom host per scenario)."""
    args = ctx.args
    ctx.note(
        f"{COMPETITOR_LABEL[target.name]} did not forward x-demo-* headers; it gets demo "
        "upstreams configured server-wide to the same values instead"
    )
    if target.name == LITELLM:
        urls = ctx.info["litellm_fallback_urls"]  # already in its config
    else:
        urls = {
            name: f"http://127.0.0.1:{stack.free_port()}/v1"
            for name in sorted(set(FALLBACK_SCENARIOS.values()))
        }
        ctx.info[f"{target.name}_fallback_urls"] = urls
    flags = {
        "bench-plain0": ["--latency-ms", "0", "--completion-tokens", "16"],
        "bench-plain20": [
            "--latency-ms",
            f"{args.sweep_latency_ms:g}",
            "--completion-tokens",
            "16",
        ],
        "bench-stream": [
            "--latency-ms",
            "0",
            "--chunk-delay-ms",
            f"{args.stream_delay_ms:g}",
            "--completion-tokens",
            str(args.stream_chunks),
            "--chunks",
            str(args.stream_chunks),
        ],
    }
    procs: dict[str, stack.Proc] = {}
    for name, extra in flags.items():
        port = urls[name].rsplit(":", 1)[1].split("/")[0]
        argv = [stack.python(), "-m", "simulators.llm", "--host", "127.0.0.1", "--port", port]
        proc = ctx.procs.start(
            f"upstream-{target.name}-{name}", [*argv, "--record-limit", "0", *extra], base_env()
        )
        stack.wait_ready(proc, f"http://127.0.0.1:{port}/_demo/health", 30)
        procs[name] = proc
    target.fallback_upstreams = {s: procs[n] for s, n in FALLBACK_SCENARIOS.items()}
    if target.name == LITELLM:
        target.fallback_models = dict(FALLBACK_SCENARIOS)
    else:
        target.fallback_hosts = {s: urls[n] for s, n in FALLBACK_SCENARIOS.items()}


def ensure_alive(ctx: Ctx) -> None:
    for proc in [ctx.upstream, ctx.worker] + [t.proc for t in ctx.targets]:
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.name} died (exit {proc.popen.returncode}):\n{proc.log_tail()}"
            )


# ---- phase 1: concurrency 1 ----


def phase_con1(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    assert ctx.lg is not None
    say(
        f"\n[1/5] Concurrency 1, plain requests, upstream latency 0: {args.rounds} rounds x "
        f"{args.requests} requests per target, order rotated each round"
    )
    names = [t.name for t in ctx.targets]
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        row: dict[str, Any] = {}
        for t in rotated(ctx.targets, r):
            job = job_for(ctx, t, "plain0", concurrency=1, count=args.requests)
            job.update(warmup_count=20, fresh=True, hard_limit_s=300)
            res = ctx.lg.run([job], wait_s=400)["jobs"][0]
            if args.con1_samples:
                args.con1_samples.mkdir(parents=True, exist_ok=True)
                path = args.con1_samples / f"con1-{t.name}-{r + 1}.json"
                path.write_text(json.dumps(res["lat_us"]))
            row[t.name] = {
                "n": res["ok"],
                "errors": sum(res["errors"].values()),
                "p50_us": stats.percentile(res["lat_us"], 0.5),
                "p99_us": stats.percentile(res["lat_us"], 0.99),
                "mean_us": sum(res["lat_us"]) / len(res["lat_us"]) if res["lat_us"] else None,
            }
        rounds.append(row)
        say(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n} p50 {stats.ms(row[n]['p50_us'])} ms" for n in names)
        )
        ensure_alive(ctx)
    summary: dict[str, Any] = {}
    for n in names:
        added50 = [
            row[n]["p50_us"] - row[DIRECT]["p50_us"]
            for row in rounds
            if row[n]["p50_us"] is not None and row[DIRECT]["p50_us"] is not None
        ]
        added99 = [
            row[n]["p99_us"] - row[DIRECT]["p99_us"]
            for row in rounds
            if row[n]["p99_us"] is not None and row[DIRECT]["p99_us"] is not None
        ]
        summary[n] = {
            "p50_us": stats.median(row[n]["p50_us"] for row in rounds),
            "p99_us": stats.median(row[n]["p99_us"] for row in rounds),
            "added_p50_us": stats.median(added50) if n != DIRECT else 0.0,
            "added_p99_us": stats.median(added99) if n != DIRECT else 0.0,
            "added_p50_min_us": min(added50) if added50 else None,
            "added_p50_max_us": max(added50) if added50 else None,
            "requests": sum(row[n]["n"] for row in rounds),
            "errors": sum(row[n]["errors"] for row in rounds),
        }
    rows = []
    for n in names:
        s = summary[n]
        spread = (
            f"{stats.signed_ms(s['added_p50_min_us'])}..{stats.signed_ms(s['added_p50_max_us'])}"
            if n != DIRECT
            else "-"
        )
        goal = (
            f"{stats.label(s['added_p50_us'] <= GOAL_ADDED_P50_US)}/"
            f"{stats.label(s['added_p99_us'] <= GOAL_ADDED_P99_US)}"
            if n != DIRECT
            else ""
        )
        rows.append(
            [
                n,
                s["requests"],
                s["errors"],
                stats.ms(s["p50_us"], 3),
                stats.ms(s["p99_us"], 3),
                stats.signed_ms(s["added_p50_us"], 3) if n != DIRECT else "-",
                stats.signed_ms(s["added_p99_us"], 3) if n != DIRECT else "-",
                spread,
                goal,
            ]
        )
    say()
    say(
        stats.table(
            "Concurrency 1 (ms; medians across rounds; added = target minus direct in the same "
            "round)",
            [
                "target",
                "requests",
                "errors",
                "p50",
                "p99",
                "added p50",
                "added p99",
                "added p50 range",
                "p50<=1/p99<=2",
            ],
            rows,
        )
    )
    return {"rounds": rounds, "summary": summary}


# ---- phase 1b: concurrency 32, upstream latency 0 ----


def phase_con32(ctx: Ctx) -> dict[str, Any]:
    """Requests per second at concurrency 32 against an upstream that answers at once (issue
    16's throughput target: the relay at least a third of the upstream called directly), in
    interleaved rounds, the order rotated per round; the median round per target."""
    args = ctx.args
    assert ctx.lg is not None
    say(
        f"\n[1b] Concurrency {CON32}, upstream latency 0: {args.con32_rounds} interleaved rounds,"
        f" 0.5s warm-up + {args.con32_seconds:g}s measured per target"
    )
    rounds: dict[str, list[float]] = {t.name: [] for t in ctx.targets}
    errors: dict[str, int] = {t.name: 0 for t in ctx.targets}
    for i in range(args.con32_rounds):
        for t in rotated(ctx.targets, i):
            job = job_for(ctx, t, "plain0", concurrency=CON32, duration=args.con32_seconds)
            job.update(warmup_s=0.5, fresh=True)
            out = ctx.lg.run([job], wait_s=args.con32_seconds + 200)
            res = out["jobs"][0]
            window = res["window_s"] or args.con32_seconds
            rounds[t.name].append(res["completions_in_window"] / window)
            errors[t.name] += sum(res["errors"].values())
            time.sleep(0.3)
        say(
            f"  round {i + 1}: "
            + ", ".join(f"{n} {v[-1]:,.0f} rps" for n, v in rounds.items() if v)
        )
        ensure_alive(ctx)
    summary: dict[str, Any] = {}
    direct = statistics.median(rounds[DIRECT]) if rounds.get(DIRECT) else None
    rows = []
    for t in ctx.targets:
        rps = statistics.median(rounds[t.name])
        share = rps / direct if direct else None
        summary[t.name] = {"rps": rps, "rounds": rounds[t.name], "errors": errors[t.name]}
        if share is not None and t.name != DIRECT:
            summary[t.name]["share_of_direct"] = share
            summary[t.name]["pass_share"] = share >= GOAL_CON32_SHARE
        rows.append(
            [
                t.name,
                stats.num(rps),
                "-" if t.name == DIRECT or share is None else f"{share:.2f}",
                str(errors[t.name]),
                " ".join(f"{v:,.0f}" for v in rounds[t.name]),
            ]
        )
    say()
    say(
        stats.table(
            f"Concurrency {CON32}, upstream latency 0 (median round; share = of direct's RPS, "
            "target >= 0.33)",
            ["target", "RPS", "share of direct", "errors", "rounds"],
            rows,
        )
    )
    return {"summary": summary}


# ---- phase 2: concurrency sweep ----


def phase_sweep(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    assert ctx.lg is not None
    say(
        f"\n[2/5] Concurrency sweep, upstream latency {args.sweep_latency_ms:g} ms: levels "
        f"{args.levels}, {args.sweep_warmup:g}s warm-up + {args.sweep_seconds:g}s measured per "
        "cell, order rotated per level"
    )
    cells: dict[int, dict[str, Any]] = {}
    for i, level in enumerate(args.level_list):
        cells[level] = {}
        for t in rotated(ctx.targets, i):
            job = job_for(ctx, t, "plain20", concurrency=level, duration=args.sweep_seconds)
            job.update(warmup_s=args.sweep_warmup, fresh=True)
            out = ctx.lg.run([job], wait_s=args.sweep_seconds + args.sweep_warmup + 200)
            res = out["jobs"][0]
            window = res["window_s"] or args.sweep_seconds
            cells[level][t.name] = {
                "rps": res["completions_in_window"] / window,
                "ok": res["ok"],
                "errors": sum(res["errors"].values()),
                "error_kinds": res["errors"],
                "error_rate": error_rate(res),
                "p50_us": stats.percentile(res["lat_us"], 0.5),
                "p99_us": stats.percentile(res["lat_us"], 0.99),
                "client_cpu": out["cpu_s"] / out["wall_s"] if out["wall_s"] else None,
            }
            time.sleep(0.3)
        base = cells[level][DIRECT]
        for c in cells[level].values():
            c["added_p99_us"] = (
                c["p99_us"] - base["p99_us"]
                if c["p99_us"] is not None and base["p99_us"] is not None
                else None
            )
            c["qualifies"] = (
                c["error_rate"] < SWEEP_ERROR_LIMIT
                and c["ok"] > 0
                and c["added_p99_us"] is not None
                and c["added_p99_us"] <= SWEEP_ADDED_P99_LIMIT_US
            )
        say(
            f"  concurrency {level}: "
            + ", ".join(f"{n} {c['rps']:,.0f} rps" for n, c in cells[level].items())
        )
        ensure_alive(ctx)

    rows = []
    for level in args.level_list:
        for t in ctx.targets:
            c = cells[level][t.name]
            rows.append(
                [
                    f"{t.name} @{level}",
                    stats.num(c["rps"]),
                    stats.ms(c["p50_us"]),
                    stats.ms(c["p99_us"]),
                    stats.signed_ms(c["added_p99_us"]) if t.name != DIRECT else "-",
                    stats.pct(c["error_rate"]),
                    stats.pct(c["client_cpu"], 0),
                    "yes" if c["qualifies"] else "no",
                ]
            )
    say()
    say(
        stats.table(
            "Concurrency sweep (ms; qualifies = errors < 0.1% and added p99 <= 10 ms vs direct "
            "at the same concurrency; client CPU = load generator, % of one core)",
            [
                "target @concurrency",
                "RPS",
                "p50",
                "p99",
                "added p99",
                "errors",
                "client CPU",
                "qualifies",
            ],
            rows,
        )
    )
    best: dict[str, Any] = {}
    for t in ctx.targets:
        ok_levels = [
            (cells[lv][t.name]["rps"], lv)
            for lv in args.level_list
            if cells[lv][t.name]["qualifies"]
        ]
        peak = max((cells[lv][t.name]["rps"], lv) for lv in args.level_list)
        best[t.name] = {
            "best_rps": max(ok_levels)[0] if ok_levels else None,
            "best_level": max(ok_levels)[1] if ok_levels else None,
            "peak_rps": peak[0],
            "peak_level": peak[1],
        }
    rows = [
        [
            n,
            stats.num(b["best_rps"]),
            b["best_level"] or "-",
            stats.num(b["peak_rps"]),
            b["peak_level"],
        ]
        for n, b in best.items()
    ]
    say()
    say(
        stats.table(
            "Sweep summary (best = highest RPS that qualifies; peak = highest RPS at all)",
            ["target", "best RPS", "at", "peak RPS", "at"],
            rows,
        )
    )
    return {"cells": {str(k): v for k, v in cells.items()}, "best": best}


# ---- phase 3: streaming ----


def phase_stream(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    assert ctx.lg is not None
    say(
        f"\n[3/5] Streaming: {args.stream_chunks} chunks {args.stream_delay_ms:g} ms apart, "
        f"{args.stream_rounds} rounds x {args.streams} streams per target, "
        f"{args.stream_concurrency} at once"
    )
    names = [t.name for t in ctx.targets]
    rounds: list[dict[str, Any]] = []
    stream_s = args.stream_chunks * args.stream_delay_ms / 1000
    for r in range(args.stream_rounds):
        row: dict[str, Any] = {}
        for t in rotated(ctx.targets, r):
            job = job_for(ctx, t, "stream", concurrency=args.stream_concurrency, count=args.streams)
            job.update(warmup_count=args.stream_concurrency, fresh=True, stagger_s=stream_s)
            job["hard_limit_s"] = 60 + 4 * stream_s * (args.streams / args.stream_concurrency + 1)
            res = ctx.lg.run([job], wait_s=job["hard_limit_s"] + 60)["jobs"][0]
            row[t.name] = {
                "n": res["ok"],
                "errors": sum(res["errors"].values()),
                "error_kinds": res["errors"],
                "ttfb_p50_us": stats.percentile(res["ttfb_us"], 0.5),
                "ttfb_p99_us": stats.percentile(res["ttfb_us"], 0.99),
                "gap_p50_us": stats.percentile(res["gap_us"], 0.5),
                "gap_p99_us": stats.percentile(res["gap_us"], 0.99),
                "total_p50_us": stats.percentile(res["lat_us"], 0.5),
                "events_median": stats.median(res["events"]),
            }
        rounds.append(row)
        say(
            f"  round {r + 1}/{args.stream_rounds}: "
            + ", ".join(f"{n} ttfb p50 {stats.ms(row[n]['ttfb_p50_us'])} ms" for n in names)
        )
        ensure_alive(ctx)

    def added(n: str, key: str) -> float | None:
        if n == DIRECT:
            return 0.0
        diffs = [
            row[n][key] - row[DIRECT][key]
            for row in rounds
            if row[n][key] is not None and row[DIRECT][key] is not None
        ]
        return stats.median(diffs)

    summary: dict[str, Any] = {}
    for n in names:
        summary[n] = {
            key: stats.median(row[n][key] for row in rounds)
            for key in (
                "ttfb_p50_us",
                "ttfb_p99_us",
                "gap_p50_us",
                "gap_p99_us",
                "total_p50_us",
                "events_median",
            )
        }
        summary[n]["streams"] = sum(row[n]["n"] for row in rounds)
        summary[n]["errors"] = sum(row[n]["errors"] for row in rounds)
        summary[n]["added_ttfb_p50_us"] = added(n, "ttfb_p50_us")
        summary[n]["added_ttfb_p99_us"] = added(n, "ttfb_p99_us")
        summary[n]["added_gap_p99_us"] = added(n, "gap_p99_us")
    rows = []
    for n in names:
        s = summary[n]
        rows.append(
            [
                n,
                s["streams"],
                s["errors"],
                stats.num(s["events_median"]),
                stats.ms(s["ttfb_p50_us"]),
                stats.ms(s["ttfb_p99_us"]),
                stats.signed_ms(s["added_ttfb_p50_us"]) if n != DIRECT else "-",
                stats.signed_ms(s["added_ttfb_p99_us"]) if n != DIRECT else "-",
                stats.ms(s["gap_p99_us"]),
                stats.signed_ms(s["added_gap_p99_us"]) if n != DIRECT else "-",
                stats.ms(s["total_p50_us"], 0),
                stats.label(s["added_ttfb_p99_us"] <= GOAL_STREAM_TTFB_P99_US)
                if n != DIRECT and s["added_ttfb_p99_us"] is not None
                else "",
            ]
        )
    say()
    say(
        stats.table(
            "Streaming (ms; first byte = first body bytes after the request was sent; gap = "
            "time between SSE events; medians across rounds)",
            [
                "target",
                "streams",
                "errors",
                "events",
                "TTFB p50",
                "TTFB p99",
                "added p50",
                "added p99",
                "gap p99",
                "added gap p99",
                "total p50",
                "TTFB p99<=3",
            ],
            rows,
        )
    )
    return {"rounds": rounds, "summary": summary}


# ---- phase 4: CPU per request ----


def redis_cpu(ctx: Ctx) -> float | None:
    assert ctx.redis is not None
    try:
        info = ctx.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    except Exception:
        return None


def drain(ctx: Ctx, expect_rows: int | None, timeout: float = 120) -> dict[str, Any]:
    """Wait until the relays' usage batches are in PostgreSQL (queue empty, rows counted)."""
    assert ctx.redis is not None
    time.sleep(0.6)  # the relay's reporter flushes every 0.25 s
    deadline = time.monotonic() + timeout
    rows = usage_rows()
    while time.monotonic() < deadline:
        queued = ctx.redis.llen("celery")
        rows = usage_rows()
        if queued == 0 and (expect_rows is None or (rows is not None and rows >= expect_rows)):
            return {
                "drained": True,
                "rows": rows,
                "waited_s": timeout - (deadline - time.monotonic()),
            }
        time.sleep(0.25)
    return {"drained": False, "rows": rows, "queued": ctx.redis.llen("celery")}


def redis_commands(ctx: Ctx) -> int | None:
    assert ctx.redis is not None
    try:
        return int(ctx.redis.info("stats")["total_commands_processed"])
    except Exception:
        return None


def phase_cpu(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    assert ctx.lg is not None and ctx.upstream is not None
    n = args.cpu_requests
    worker_pid = ctx.worker.pid if ctx.worker is not None else None
    say(
        f"\n[4/5] CPU per request: {n} requests per target (at most {args.cpu_seconds:g}s) at "
        f"concurrency {args.cpu_concurrency}, upstream latency {args.sweep_latency_ms:g} ms "
        "(/proc utime+stime deltas)"
    )
    out: dict[str, Any] = {}
    for t in ctx.targets:
        warm = job_for(ctx, t, "plain20", concurrency=args.cpu_concurrency, count=200)
        warm.update(fresh=True, samples=False, hard_limit_s=min(60.0, args.cpu_seconds))
        ctx.lg.run([warm], wait_s=400)
        relayed = t.name in (RELAY, GRANIAN)
        if relayed and worker_pid:
            drain(ctx, None)
        rows0 = usage_rows() if relayed else None
        # The proxy's pid is its process itself (uvicorn, granian, litellm, node), never a
        # shell; cpu_seconds adds its descendants (LiteLLM's worker) and all its threads.
        proxy0 = stack.cpu_seconds(t.proc.pid) if t.proc else None
        upstream = t.upstream_for("plain20", ctx.upstream)
        up0 = stack.cpu_seconds(upstream.pid)
        redis0 = redis_cpu(ctx)
        cmds0 = redis_commands(ctx)
        worker0 = stack.cpu_seconds(worker_pid) if worker_pid else None
        pg0 = stack.postgres_cpu()
        t0 = time.monotonic()
        job = job_for(ctx, t, "plain20", concurrency=args.cpu_concurrency, count=n)
        job.update(samples=False, hard_limit_s=args.cpu_seconds)
        res = ctx.lg.run([job], wait_s=args.cpu_seconds + 2 * args.timeout + 60)
        wall = time.monotonic() - t0
        proxy1 = stack.cpu_seconds(t.proc.pid) if t.proc else None
        up1 = stack.cpu_seconds(upstream.pid)
        redis1 = redis_cpu(ctx)
        cmds1 = redis_commands(ctx)
        done = res["jobs"][0]["ok"]
        drained = drain(ctx, (rows0 or 0) + done) if relayed and worker_pid else None
        worker1 = stack.cpu_seconds(worker_pid) if worker_pid else None
        pg1 = stack.postgres_cpu()
        ok = done or 1

        def per_req(a: float | None, b: float | None, ok: int = ok) -> float | None:
            return None if a is None or b is None else (b - a) * 1000 / ok

        out[t.name] = {
            "requests": done,
            "errors": sum(res["jobs"][0]["errors"].values()),
            "wall_s": wall,
            "rps": done / wall if wall else None,
            "proxy_ms": per_req(proxy0, proxy1),
            "proxy_cores": (proxy1 - proxy0) / wall
            if proxy0 is not None and proxy1 is not None and wall
            else None,
            "upstream_ms": per_req(up0, up1),
            "redis_ms": per_req(redis0, redis1),
            "redis_cmds": (cmds1 - cmds0) / ok if cmds0 is not None and cmds1 is not None else None,
            "worker_ms": per_req(worker0, worker1) if relayed else None,
            "postgres_ms": per_req(pg0, pg1),
            "client_ms": res["cpu_s"] * 1000 / ok,
            "drain": drained,
        }
        say(f"  {t.name}: {done} requests in {wall:.1f}s")
        ensure_alive(ctx)
    rows = [
        [
            name,
            o["requests"],
            o["errors"],
            stats.num(o["rps"]),
            stats.num(o["proxy_ms"], 3),
            stats.pct(o["proxy_cores"], 0),
            stats.num(o["upstream_ms"], 3),
            stats.num(o["redis_ms"], 3),
            stats.num(o["redis_cmds"], 1),
            stats.num(o["worker_ms"], 3),
            stats.num(o["postgres_ms"], 3),
            stats.num(o["client_ms"], 3),
        ]
        for name, o in out.items()
    ]
    say()
    say(
        stats.table(
            "CPU per request (ms of CPU; proxy = the relay / LiteLLM / Portkey (node) process "
            "tree, all threads; proxy cores = proxy CPU / wall time; worker = "
            "the Celery worker tree, measured after the usage queue drained; redis and postgres "
            "= the whole servers, shared with anything else on the machine; redis cmds counts "
            "the commands run inside Lua scripts too)",
            [
                "target",
                "requests",
                "errors",
                "RPS",
                "proxy ms",
                "proxy cores",
                "upstream ms",
                "redis ms",
                "redis cmds",
                "worker ms",
                "postgres ms",
                "client ms",
            ],
            rows,
        )
    )
    return out


# ---- phase 5: RSS soak ----


def phase_soak(ctx: Ctx) -> dict[str, Any] | None:
    args = ctx.args
    relay = ctx.target(RELAY)
    assert ctx.lg is not None and ctx.redis is not None
    if relay is None or relay.proc is None:
        ctx.note("no relay target: soak skipped")
        return None
    total_s = args.soak_minutes * 60
    say(
        f"\n[5/5] RSS soak of the relay (uvicorn): {total_s:.0f}s of steady load "
        f"({args.soak_concurrency} plain requests at {args.sweep_latency_ms:g} ms + "
        f"{args.soak_streams} streams of 16 chunks at once), RSS every {args.soak_interval:g}s, "
        f"slope after {args.soak_warmup:g}s"
    )
    pid = relay.proc.pid
    rows_start = usage_rows()
    queue_start = ctx.redis.llen("celery")
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    cpu0 = stack.cpu_seconds(pid)
    redis_mem0 = ctx.redis.info("memory").get("used_memory")
    next_at = [start]

    def sample() -> None:
        now = time.monotonic()
        if now < next_at[0]:
            return
        next_at[0] += args.soak_interval
        rss = stack.rss_bytes(pid)
        samples.append({"t_s": now - start, "rss_mib": rss / 2**20})
        if len(samples) % max(1, int(60 / args.soak_interval)) == 1:
            say(f"  t={now - start:5.0f}s  RSS {rss / 2**20:7.1f} MiB")

    sample()
    jobs = [
        job_for(
            ctx, relay, "plain20", name="plain", concurrency=args.soak_concurrency, duration=total_s
        ),
        job_for(
            ctx,
            relay,
            "soakstream",
            name="streams",
            concurrency=args.soak_streams,
            duration=total_s,
        ),
    ]
    for job in jobs:
        job.update(samples=False, hard_limit_s=total_s + 120)
    res = ctx.lg.run(jobs, wait_s=total_s + 200, on_tick=sample, tick_s=0.25)
    sample_end = stack.rss_bytes(pid) / 2**20
    samples.append({"t_s": time.monotonic() - start, "rss_mib": sample_end})
    cpu1 = stack.cpu_seconds(pid)
    redis_mem1 = ctx.redis.info("memory").get("used_memory")
    fit_points = [s for s in samples if s["t_s"] >= args.soak_warmup]
    fit = stats.least_squares(
        [s["t_s"] / 60 for s in fit_points], [s["rss_mib"] for s in fit_points]
    )
    plain, streams = res["jobs"]
    wall = time.monotonic() - start
    out = {
        "samples": samples,
        "slope_mib_per_min": fit["slope"] if fit else None,
        "r2": fit["r2"] if fit else None,
        "points_in_fit": len(fit_points),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_warmup_mib": fit_points[0]["rss_mib"] if fit_points else None,
        "rss_end_mib": sample_end,
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "requests": plain["ok"],
        "streams": streams["ok"],
        "errors": sum(plain["errors"].values()) + sum(streams["errors"].values()),
        "error_kinds": {
            **plain["errors"],
            **{f"stream {k}": v for k, v in streams["errors"].items()},
        },
        "rps": plain["completions_in_window"] / (plain["window_s"] or total_s),
        "plain_p50_us": plain.get("lat_p50_us"),
        "plain_p99_us": plain.get("lat_p99_us"),
        "relay_cpu_cores": (cpu1 - cpu0) / wall if wall else None,
        "redis_used_memory_delta_mib": (redis_mem1 - redis_mem0) / 2**20
        if redis_mem0 is not None and redis_mem1 is not None
        else None,
        "celery_queue_at_start": queue_start,
        "celery_queue_at_end": ctx.redis.llen("celery"),
        "usage_rows_recorded": (usage_rows() or 0) - rows_start if rows_start is not None else None,
    }
    short = total_s - args.soak_warmup < 300
    say()
    say(
        stats.table(
            "RSS soak (relay under uvicorn)",
            ["figure", "value"],
            [
                ["requests / streams", f"{out['requests']:,} / {out['streams']:,}"],
                ["errors", out["errors"]],
                ["plain RPS", stats.num(out["rps"])],
                [
                    "plain p50 / p99 (ms)",
                    f"{stats.ms(out['plain_p50_us'])} / {stats.ms(out['plain_p99_us'])}",
                ],
                ["relay CPU (cores)", stats.num(out["relay_cpu_cores"], 2)],
                [
                    "RSS start / after warm-up / end / max (MiB)",
                    f"{out['rss_start_mib']:.1f} / {stats.num(out['rss_after_warmup_mib'], 1)} / "
                    f"{out['rss_end_mib']:.1f} / {out['rss_max_mib']:.1f}",
                ],
                [
                    "RSS slope after warm-up (MiB/min)",
                    f"{stats.num(out['slope_mib_per_min'], 3)} (r² {stats.num(out['r2'], 2)}, "
                    f"{out['points_in_fit']} points)"
                    + (" - short soak, indicative" if short else ""),
                ],
                [
                    "Redis used_memory change (MiB)",
                    stats.num(out["redis_used_memory_delta_mib"], 2),
                ],
                [
                    "Celery queue (messages) at start / end",
                    f"{out['celery_queue_at_start']} / {out['celery_queue_at_end']}",
                ],
                [
                    "usage events recorded by the worker during the soak",
                    f"{stats.num(out['usage_rows_recorded'])} of "
                    f"~{out['requests'] + out['streams']:,} requests completed",
                ],
            ],
        )
    )
    return out


# ---- optional: profile ----


IDLE_FRAMES = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
    }
)
PROJECT_PREFIXES = {
    RELAY: ("relay/", "keys/", "billing/"),
    GRANIAN: ("relay/", "keys/", "billing/"),
    LITELLM: ("litellm/",),
}


def phase_profile(ctx: Ctx) -> dict[str, Any] | None:
    args = ctx.args
    venv = BENCH_DIR / "tools-venv"
    ok, why = stack.ensure_venv(
        venv,
        ["py-spy"],
        LOG_DIR / "py-spy-install.log",
        lambda m: say(f"  {m}"),
        args.install_timeout,
    )
    if not ok:
        ctx.note(f"py-spy could not be installed: {why}")
        return None
    out: dict[str, Any] = {}
    for name in args.profile_target_list:
        target = ctx.target(name)
        if target is None or target.proc is None:
            ctx.note(f"profile: no {name} target to sample")
            continue
        if name == PORTKEY:
            ctx.note("profile: py-spy samples Python only; Portkey's gateway runs on node")
            continue
        result = profile_one(ctx, target, venv / "bin" / "py-spy")
        if result is not None:
            out[name] = result
    return out


def profile_one(ctx: Ctx, target: Target, py_spy: Path) -> dict[str, Any] | None:
    args = ctx.args
    assert ctx.lg is not None and target.proc is not None
    say(
        f"\n[profile] py-spy on {target.name} for {args.profile_seconds:g}s at concurrency "
        f"{args.profile_concurrency}, upstream latency 0"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    raw_path = BENCH_DIR / f"profile-{target.name}-{stamp}.txt"
    warm = job_for(ctx, target, "plain0", concurrency=args.profile_concurrency, count=200)
    warm.update(fresh=True, samples=False, hard_limit_s=60)
    ctx.lg.run([warm], wait_s=300)
    argv = [str(py_spy), "record", "--pid", str(target.proc.pid), "--subprocesses"]
    argv += ["--duration", str(int(args.profile_seconds)), "--rate", "200"]
    argv += ["--format", "raw", "--output", str(raw_path)]
    with open(LOG_DIR / f"py-spy-{target.name}.log", "wb") as log:
        spy = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            job = job_for(
                ctx,
                target,
                "plain0",
                concurrency=args.profile_concurrency,
                duration=args.profile_seconds + 1,
            )
            job.update(samples=False)
            res = ctx.lg.run([job], wait_s=args.profile_seconds + 200)
            spy.wait(60)
        finally:
            if spy.poll() is None:
                spy.terminate()
                spy.wait(10)
    if spy.returncode != 0 or not raw_path.exists():
        ctx.note(f"py-spy failed on {target.name} (exit {spy.returncode}); see {log.name}")
        return None
    total = 0
    self_fn: dict[str, int] = {}
    incl_fn: dict[str, int] = {}
    self_pkg: dict[str, int] = {}
    for line in raw_path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f
            for f in stack_text.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames or _frame_name(frames[-1]) in IDLE_FRAMES:
            continue  # a thread-pool thread waiting for work: idle, not CPU
        total += count
        leaf = _frame_name(frames[-1])
        self_fn[leaf] = self_fn.get(leaf, 0) + count
        pkg = _frame_package(frames[-1])
        self_pkg[pkg] = self_pkg.get(pkg, 0) + count
        for name in {_frame_name(f) for f in frames}:
            incl_fn[name] = incl_fn.get(name, 0) + count
    if not total:
        ctx.note(f"py-spy recorded no samples of {target.name}")
        return None
    prefixes = PROJECT_PREFIXES.get(target.name, ())
    project_incl = sorted(
        ((k, v) for k, v in incl_fn.items() if any(f"({p}" in k for p in prefixes)),
        key=lambda x: -x[1],
    )[:25]
    top_self = sorted(self_fn.items(), key=lambda x: -x[1])
    rps = res["jobs"][0]["completions_in_window"] / (res["jobs"][0]["window_s"] or 1)
    say()
    say(
        stats.table(
            f"{target.name} profile: self time by top-level module ({total} samples at "
            f"{rps:,.0f} RPS; stacks in {raw_path.relative_to(ROOT)})",
            ["module", "self %"],
            [
                [k, f"{v * 100 / total:.1f}"]
                for k, v in sorted(self_pkg.items(), key=lambda x: -x[1])[:15]
            ],
        )
    )
    say()
    say(
        stats.table(
            f"{target.name} profile: top functions by self time",
            ["function", "self %"],
            [[k[:110], f"{v * 100 / total:.1f}"] for k, v in top_self[:25]],
        )
    )
    say()
    say(
        stats.table(
            f"{target.name} profile: its own functions by inclusive time",
            ["function", "incl %"],
            [[k[:110], f"{v * 100 / total:.1f}"] for k, v in project_incl],
        )
    )
    return {
        "raw": str(raw_path),
        "samples": total,
        "rps": rps,
        "self_by_module": {k: v / total for k, v in self_pkg.items()},
        "self_top": {k: v / total for k, v in top_self[:40]},
        "inclusive_own": {k: v / total for k, v in project_incl},
    }


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def _frame_package(frame: str) -> str:
    """py-spy shortens paths to their import path ("asyncio/runners.py"): its first part."""
    where = _frame_name(frame).partition(" (")[2].rstrip(")")
    return where.split("/", 1)[0].removesuffix(".py") or "?"


# ---- summary ----


def summarize(ctx: Ctx, command: str) -> dict[str, Any]:
    r = ctx.results
    summary: dict[str, Any] = {"targets": {}}
    measured = [t.name for t in ctx.targets]
    relays = [n for n in measured if n in (RELAY, GRANIAN)]
    competitors = [n for n in COMPETITORS if n in measured]
    sweep_best = r.get("sweep", {}).get("best", {})
    rows = []
    for name in relays + competitors:
        s: dict[str, Any] = {}
        con1 = r.get("con1", {}).get("summary", {}).get(name)
        if con1:
            s["added_p50_us"] = con1["added_p50_us"]
            s["added_p99_us"] = con1["added_p99_us"]
            s["pass_added_p50"] = con1["added_p50_us"] <= GOAL_ADDED_P50_US
            s["pass_added_p99"] = con1["added_p99_us"] <= GOAL_ADDED_P99_US
        con32 = r.get("con32", {}).get("summary", {}).get(name)
        if con32 and "share_of_direct" in con32:
            s["con32_rps"] = con32["rps"]
            s["con32_share"] = con32["share_of_direct"]
            s["pass_con32_share"] = con32["pass_share"]
        best = sweep_best.get(name)
        if best:
            s["best_rps"] = best["best_rps"]
            s["peak_rps"] = best["peak_rps"]
            for other in competitors:
                theirs = sweep_best.get(other)
                if other == name or not theirs:
                    continue
                if best["best_rps"] and theirs["best_rps"]:
                    s[f"rps_ratio_vs_{other}"] = best["best_rps"] / theirs["best_rps"]
                s[f"peak_rps_ratio_vs_{other}"] = best["peak_rps"] / theirs["peak_rps"]
            if name in relays and f"peak_rps_ratio_vs_{LITELLM}" in s:
                ratio = s.get(f"rps_ratio_vs_{LITELLM}", s[f"peak_rps_ratio_vs_{LITELLM}"])
                s["pass_rps_ratio"] = ratio >= GOAL_RPS_RATIO
        stream = r.get("stream", {}).get("summary", {}).get(name)
        if stream and stream["added_ttfb_p99_us"] is not None:
            s["added_ttfb_p99_us"] = stream["added_ttfb_p99_us"]
            s["added_gap_p99_us"] = stream["added_gap_p99_us"]
            s["pass_stream_ttfb"] = stream["added_ttfb_p99_us"] <= GOAL_STREAM_TTFB_P99_US
        cpu = r.get("cpu", {}).get(name)
        if cpu:
            s["cpu_ms_per_request"] = cpu["proxy_ms"]
        if name == RELAY and r.get("soak"):
            s["rss_slope_mib_per_min"] = r["soak"]["slope_mib_per_min"]
            if r["soak"]["slope_mib_per_min"] is not None:
                s["pass_rss"] = r["soak"]["slope_mib_per_min"] < GOAL_RSS_SLOPE_MIB_MIN
        s["processes"] = PROCESS_SHAPE.get(name)
        summary["targets"][name] = s

        def goal(key: str, s: dict[str, Any] = s) -> str:
            return stats.label(s.get(key)) if key in s else "n/a"

        def ratio_text(other: str, s: dict[str, Any] = s, name: str = name) -> str:
            if other == name:
                return "-"
            if f"rps_ratio_vs_{other}" in s:
                text = f"{s[f'rps_ratio_vs_{other}']:.1f}x"
            elif f"peak_rps_ratio_vs_{other}" in s:
                text = f"{s[f'peak_rps_ratio_vs_{other}']:.1f}x (peak)"
            else:
                return "-"
            if other == LITELLM and name in relays:  # the 10x target: the relay's, vs LiteLLM
                text += f" {goal('pass_rps_ratio')}"
            return text

        rows.append(
            [
                name,
                f"{stats.signed_ms(s.get('added_p50_us'), 3)} {goal('pass_added_p50')}",
                f"{stats.signed_ms(s.get('added_p99_us'), 3)} {goal('pass_added_p99')}",
                f"{s['con32_share']:.2f} {goal('pass_con32_share')}" if "con32_share" in s else "-",
                stats.num(s.get("best_rps")),
                *[ratio_text(other) for other in competitors],
                f"{stats.signed_ms(s.get('added_ttfb_p99_us'))} {goal('pass_stream_ttfb')}",
                stats.num(s.get("cpu_ms_per_request"), 3),
                f"{stats.num(s.get('rss_slope_mib_per_min'), 3)} {goal('pass_rss')}"
                if name == RELAY
                else "-",
            ]
        )
    say("\n" + "=" * 100)
    say(
        stats.table(
            "SUMMARY (targets: added p50 <= 1 ms, p99 <= 2 ms at concurrency 1; at concurrency "
            "32 and upstream latency 0 at least 1/3 of direct's RPS; RPS >= 10x LiteLLM's; added "
            "first-byte p99 <= 3 ms; RSS growth < 1 MiB/min)",
            [
                "target",
                "added p50 (ms)",
                "added p99 (ms)",
                "@32 share of direct",
                "best RPS",
                *[f"RPS vs {COMPETITOR_SHORT[other]}" for other in competitors],
                "added TTFB p99",
                "CPU ms/req",
                "RSS MiB/min",
            ],
            rows,
        )
    )
    shapes = [f"{n}: {PROCESS_SHAPE[n]}" for n in relays + competitors if n in PROCESS_SHAPE]
    if shapes:
        say("processes: " + "; ".join(shapes))
    for other in COMPETITORS:
        if other in ctx.dropped:
            say(f"{COMPETITOR_LABEL[other]} was not measured (see the notes).")
        elif other not in measured:
            say(f"{COMPETITOR_LABEL[other]} was not asked for (--targets, --no-{other}).")
    for note in ctx.notes:
        say(f"note: {note}")
    say(f"command: {command}")
    return summary


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_start": stack.loadavg(),
    }
    for dist in (
        "aiohttp",
        "uvicorn",
        "uvloop",
        "httptools",
        "redis",
        "hiredis",
        "celery",
        "orjson",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[dist] = importlib.metadata.version(dist)
    return info


# ---- main ----


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    if os.environ.get("MAKELEVEL"):
        command = f"make bench BENCH_ARGS={shlex.quote(' '.join(sys.argv[1:]))}  ({command})"
    # Ctrl-C, SIGTERM and SIGHUP all stop everything this run started (also when started
    # from a shell that had SIGINT ignored).
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    ctx = Ctx(args=args, procs=stack.Procs(LOG_DIR))
    ctx.info = machine_info()
    t_start = time.monotonic()
    say(
        f"TokenPapa relay benchmark ({'quick' if args.quick else 'full'} run), "
        f"{started:%Y-%m-%d %H:%M:%S} UTC"
    )
    say(
        f"  {ctx.info['cpus']} CPUs, load average {' '.join(map(str, ctx.info['loadavg_start']))}"
        + (
            "  (the machine is busy: figures will be noisy)"
            if ctx.info["loadavg_start"][0] > 1
            else ""
        )
    )
    status = 0
    try:
        build_world(ctx)
        runners = {
            "con1": phase_con1,
            "con32": phase_con32,
            "sweep": phase_sweep,
            "stream": phase_stream,
            "cpu": phase_cpu,
            "soak": phase_soak,
            "profile": phase_profile,
        }
        for phase in PHASES:
            if phase in args.phase_list:
                ctx.results[phase] = runners[phase](ctx)
        ctx.results["summary"] = summarize(ctx, command)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        status = 130
    except Exception as exc:
        say(f"\nbenchmark failed: {exc}")
        status = 1
    finally:
        if ctx.lg is not None:
            ctx.lg.quit()
        ctx.procs.stop_all()
        if ctx.redis is not None:
            with contextlib.suppress(Exception):
                ctx.redis.close()
    ctx.info["loadavg_end"] = stack.loadavg()
    ctx.info["duration_s"] = time.monotonic() - t_start
    out_path = BENCH_DIR / f"results-{stamp}.json"
    payload = {
        "command": command,
        "started_utc": started.isoformat(),
        "status": "ok" if status == 0 else "incomplete",
        "machine": ctx.info,
        # (Paths such as --con1-samples as text.)
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {t.name: t.url for t in ctx.targets},
        "notes": ctx.notes,
        "results": ctx.results,
    }
    out_path.write_bytes(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    say(f"figures written to {out_path.relative_to(ROOT)} ({ctx.info['duration_s']:.0f}s in all)")
    return status


if __name__ == "__main__":
    sys.exit(main())
