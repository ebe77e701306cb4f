"""Relay scale-out on this machine: peak requests per second of one relay process, then of two
(``python -m serving relay --workers N``: uvicorn's processes sharing one port), at the same
concurrency, with the same world as ``run.py`` (PostgreSQL, Redis db 7, the catalog, a funded
bench account, a Celery worker recording usage, the demo upstream).

    .venv/bin/python tests/bench/relay_scale.py [--concurrency 64] [--seconds 8] [--processes 1,2]

Prints one line per relay process count and a JSON summary on the last line; nothing here is a
test. The load generator is ``loadgen.py`` (``--clients`` processes, as in ``run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import redis
import run
import stack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", default="1,2", help="relay process counts to measure")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per count")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per count")
    p.add_argument("--latency-ms", type=float, default=20.0, help="upstream latency")
    p.add_argument("--clients", type=int, default=1, help="load-generator processes")
    return p.parse_args(argv)


def measure(
    ctx: run.Ctx, env: dict[str, str], secret: str, processes: int, args: argparse.Namespace
) -> dict[str, Any]:
    assert ctx.lg is not None
    port = stack.free_port()
    argv = [stack.python(), "-m", "serving", "relay", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(processes), "--log-level", "warning"]
    proc = ctx.procs.start(f"relay-x{processes}", argv, env)
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_ready(proc, f"{url}/healthz", 60)
        target = run.Target(run.RELAY, f"{url}/v1/chat/completions", secret, ctx.model, proc)
        job = run.job_for(
            ctx,
            target,
            "plain20",
            concurrency=args.concurrency,
            duration=args.seconds,
            warmup_s=args.warmup,
            samples=False,
            fresh=True,
        )
        cpu_before = stack.cpu_seconds(proc.pid)
        res = ctx.lg.run([job], wait_s=args.seconds * 3 + args.warmup + 120)["jobs"][0]
        cpu = stack.cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.stop()
        ctx.procs.started.remove(proc)
    rps = res["completions_in_window"] / res["window_s"] if res["window_s"] else 0.0
    return {
        "processes": processes,
        "rps": round(rps, 1),
        "p50_ms": round((res["lat_p50_us"] or 0) / 1000, 1),
        "p99_ms": round((res["lat_p99_us"] or 0) / 1000, 1),
        "errors": run.errors_text(res),
        "relay_cpu_s": round(cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench_args = run.parse_args(["--quick", "--no-litellm", "--no-portkey", "--no-granian"])
    bench_args.sweep_latency_ms = args.latency_ms
    procs = stack.Procs(run.LOG_DIR)
    ctx = run.Ctx(args=bench_args, procs=procs)
    results = []
    try:
        ctx.redis = redis.Redis.from_url(run.REDIS_URL)
        ctx.upstream, ctx.upstream_url = run.start_upstream(ctx, "upstream")
        env = run.world_env(ctx.upstream_url)
        secret = run.setup_world(ctx, env)
        run.pick_model(ctx)
        worker_argv = [str(stack.ROOT / ".venv/bin/celery"), "-A", "portal", "worker"]
        worker_argv += ["--concurrency", "1", "--loglevel", "WARNING"]
        ctx.worker = procs.start("worker", worker_argv, env, leader_first=True)
        ctx.lg = run.LoadGens(procs, args.clients)
        run.say(
            f"relay scale-out: {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
            f"{args.seconds:g}s measured, upstream latency {args.latency_ms:g} ms"
        )
        for n in (int(p) for p in args.processes.split(",")):
            result = measure(ctx, env, secret, n, args)
            results.append(result)
            run.say(
                f"  {n} relay process(es): {result['rps']:8.1f} req/s  p50 {result['p50_ms']} ms"
                f"  p99 {result['p99_ms']} ms  errors {result['errors']}"
                f"  relay CPU {result['relay_cpu_s']} s"
            )
            time.sleep(1.0)  # let the worker drain the usage queue between counts
        run.say(f"  load average: {stack.loadavg()}")
    finally:
        if ctx.lg is not None:
            ctx.lg.quit()
        procs.stop_all()
    print(json.dumps({"command": " ".join(sys.argv), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
