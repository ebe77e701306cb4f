"""The benchmark's load generator: an asyncio + aiohttp client in its own process.

``run.py`` starts one or more of these (``--clients``) and talks to each over its standard
input and output, one JSON object per line. A command is::

    {"op": "run", "jobs": [JOB, ...], "start_at": <time.monotonic() value or null>}
    {"op": "quit"}

and the answer is ``{"ok": true, "jobs": [RESULT, ...], "cpu_s": ..., "wall_s": ...}`` (or
``{"ok": false, "error": "..."}``). The jobs of one command run at the same time (the soak
mixes plain requests and streams that way). A JOB says::

    url, headers, body (str), stream (bool), concurrency,
    count (measured requests; stop after them) or duration (seconds of measurement),
    warmup_count (requests before measuring, not recorded), warmup_s (with a duration: the
    window opens after this long and once every virtual client has completed a request, and
    lasts ``duration`` or twice as long as that first wave took, whichever is longer),
    warmup_body / warmup_stream (what a warm-up request sends, default the same),
    timeout (seconds per request), samples (false: send counts and percentiles only),
    fresh (true: new connection pool for this job),
    stagger_s (spread the virtual clients' first requests over this many seconds)

Every loop is bounded: by ``count``, by ``duration`` and by ``hard_limit_s`` (default
``duration + warm-up + 2 x timeout + 60 s``), whichever comes first. Times are taken with
``time.perf_counter_ns`` and sent in microseconds.

Only loopback URLs are accepted: this process refuses to send a request anywhere else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NS_PER_US = 1000


class JobResult:
    __slots__ = (
        "completions_in_window",
        "errors",
        "events",
        "gap_us",
        "lat_us",
        "measure_end",
        "measure_start",
        "ok",
        "ttfb_us",
    )

    def __init__(self) -> None:
        self.ok = 0
        self.completions_in_window = 0
        self.errors: dict[str, int] = {}
        self.lat_us: list[int] = []
        self.ttfb_us: list[int] = []
        self.gap_us: list[int] = []
        self.events: list[int] = []
        self.measure_start: int | None = None
        self.measure_end: int | None = None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _check_url(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise ValueError(f"refusing to send load to a non-loopback address: {url}")


def _percentile(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Client:
    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    async def session(self, url: str, fresh: bool) -> aiohttp.ClientSession:
        base = url.split("/v1/", 1)[0]
        old = self.sessions.get(base)
        if old is not None and (fresh or old.closed):
            await old.close()
            old = None
        if old is None:
            old = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=300, enable_cleanup_closed=True
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self.sessions[base] = old
        return old

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()

    # ---- one request -------------------------------------------------------------------------

    async def one(
        self,
        session: aiohttp.ClientSession,
        job: dict[str, Any],
        body: bytes,
        stream: bool,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[str | None, int, int | None, list[int], int]:
        """(error kind or None, latency ns, ttfb ns, event arrival times ns, events)."""
        clock = time.perf_counter_ns
        t0 = clock()
        ttfb: int | None = None
        arrivals: list[int] = []
        try:
            async with session.post(
                job["url"], data=body, headers=job["headers"], timeout=timeout
            ) as resp:
                if resp.status != 200:
                    await resp.read()
                    return f"HTTP {resp.status}", clock() - t0, None, arrivals, 0
                if not stream:
                    await resp.read()
                    return None, clock() - t0, None, arrivals, 0
                buffer = b""
                done = False
                async for data in resp.content.iter_any():
                    now = clock()
                    if ttfb is None:
                        ttfb = now - t0
                    buffer += data
                    if b"\r" in buffer:
                        buffer = buffer.replace(b"\r\n", b"\n")
                    if b"\n\n" not in buffer:
                        continue
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        if not event.strip():
                            continue
                        arrivals.append(now)
                        if event.startswith(b"data: [DONE]"):
                            done = True
                end = clock()
                if not done:
                    return "stream without [DONE]", end - t0, ttfb, arrivals, len(arrivals)
                return None, end - t0, ttfb, arrivals, len(arrivals)
        except TimeoutError:
            return "timeout", clock() - t0, ttfb, arrivals, 0
        except aiohttp.ClientError as exc:
            return type(exc).__name__, clock() - t0, ttfb, arrivals, 0
        except OSError as exc:
            return type(exc).__name__, clock() - t0, ttfb, arrivals, 0

    # ---- one job -----------------------------------------------------------------------------

    async def job(self, job: dict[str, Any], start_at: float | None) -> dict[str, Any]:
        _check_url(job["url"])
        clock = time.perf_counter_ns
        concurrency = max(1, int(job.get("concurrency", 1)))
        count = job.get("count")
        duration = job.get("duration")
        if count is None and duration is None:
            raise ValueError("a job needs a count or a duration")
        warmup_count = int(job.get("warmup_count", 0))
        warmup_s = float(job.get("warmup_s", 0.0))
        timeout_s = float(job.get("timeout", 30.0))
        body = job["body"].encode()
        stream = bool(job.get("stream", False))
        warm_body = job.get("warmup_body", job["body"]).encode()
        warm_stream = bool(job.get("warmup_stream", stream))
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        hard_limit_s = float(
            job.get("hard_limit_s", (duration or 0) + warmup_s + 2 * timeout_s + 60)
        )
        session = await self.session(job["url"], bool(job.get("fresh", False)))
        result = JobResult()

        if start_at is not None:
            delay = start_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, 5.0))

        # Warm-up: open the connections (as many as the concurrency) and let the servers
        # settle; nothing is recorded.
        if warmup_count:
            left = [warmup_count]

            async def warm_worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    await self.one(session, job, warm_body, warm_stream, timeout)

            await asyncio.gather(*(warm_worker() for _ in range(min(concurrency, warmup_count))))

        started = clock()
        hard_deadline = started + int(hard_limit_s * 1e9)
        warm_until = started + int(warmup_s * 1e9)
        duration_ns = int(duration * 1e9) if duration is not None else None
        # With a duration, the window opens at the first completion after ``warmup_s`` once
        # every virtual client has completed a request (so a slow server's first, queued
        # wave is never the whole sample) and stays open ``duration`` seconds.
        window: list[int | None] = [None, None]  # start, end
        warm_done = [0]
        issued = [0]
        keep = bool(job.get("samples", True))
        stagger_ns = int(float(job.get("stagger_s", 0.0)) * 1e9)

        def may_issue(now: int) -> bool:
            if now >= hard_deadline:
                return False
            if window[1] is not None and now >= window[1]:
                return False
            return count is None or issued[0] < count

        async def worker(index: int) -> None:
            if stagger_ns:
                # Spread the clients' first requests over ``stagger_s`` so that equal-length
                # requests (streams) do not all start at the same instant, round after round.
                await asyncio.sleep(stagger_ns * index / concurrency / 1e9)
            while True:
                t_start = clock()
                if not may_issue(t_start):
                    return
                issued[0] += 1
                err, lat, ttfb, arrivals, events = await self.one(
                    session, job, body, stream, timeout
                )
                t_end = t_start + lat
                if duration_ns is not None:
                    # What counts is what *completes* inside the window (closed loop);
                    # requests still running when it closes finish uncounted and untimed.
                    if window[0] is None:
                        warm_done[0] += 1
                        if warm_done[0] >= concurrency and t_end >= warm_until:
                            # At least twice as long as the first wave took, so that a
                            # saturated server's next wave can complete inside it.
                            window[0] = t_end
                            window[1] = t_end + max(duration_ns, 2 * (t_end - started))
                        continue
                    assert window[1] is not None
                    if t_end > window[1]:
                        continue
                if result.measure_start is None or t_start < result.measure_start:
                    result.measure_start = t_start
                if result.measure_end is None or t_end > result.measure_end:
                    result.measure_end = t_end
                if err is not None:
                    result.error(err)
                    continue
                result.ok += 1
                result.completions_in_window += 1
                result.lat_us.append(lat // NS_PER_US)
                if stream:
                    if ttfb is not None:
                        result.ttfb_us.append(ttfb // NS_PER_US)
                    result.events.append(events)
                    if keep:
                        result.gap_us.extend(
                            (b - a) // NS_PER_US for a, b in itertools.pairwise(arrivals)
                        )

        await asyncio.gather(*(worker(i) for i in range(concurrency)))

        if duration_ns is not None:
            window_ns = window[1] - window[0] if window[0] is not None and window[1] else 0
        elif result.measure_start is not None and result.measure_end is not None:
            window_ns = result.measure_end - result.measure_start
        else:
            window_ns = 0
        out: dict[str, Any] = {
            "name": job.get("name", ""),
            "ok": result.ok,
            "errors": result.errors,
            "completions_in_window": result.completions_in_window,
            "window_s": window_ns / 1e9,
            "concurrency": concurrency,
        }
        if keep:
            out["lat_us"] = result.lat_us
            out["ttfb_us"] = result.ttfb_us
            out["gap_us"] = result.gap_us
            out["events"] = result.events
        else:
            lat = sorted(result.lat_us)
            out["lat_p50_us"] = _percentile(lat, 0.5)
            out["lat_p99_us"] = _percentile(lat, 0.99)
            ttfb = sorted(result.ttfb_us)
            out["ttfb_p50_us"] = _percentile(ttfb, 0.5)
            out["ttfb_p99_us"] = _percentile(ttfb, 0.99)
        return out


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client = Client()
    out = sys.stdout
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                command = json.loads(line)
                if command.get("op") == "quit":
                    return
                if command.get("op") != "run":
                    raise ValueError(f"unknown op {command.get('op')!r}")
                cpu0 = os.times()
                wall0 = time.perf_counter()
                jobs = await asyncio.gather(
                    *(client.job(job, command.get("start_at")) for job in command["jobs"])
                )
                cpu1 = os.times()
                reply: dict[str, Any] = {
                    "ok": True,
                    "jobs": jobs,
                    "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
                    "wall_s": time.perf_counter() - wall0,
                }
            except Exception as exc:  # report it to run.py, keep serving
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply, separators=(",", ":")) + "\n")
            out.flush()
    finally:
        await client.close()


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
