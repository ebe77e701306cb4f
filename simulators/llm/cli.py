"""The command line: ``python -m simulators.llm --host 127.0.0.1 --port 8002`` (see ``--help``)."""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import replace

from aiohttp import web
from aiohttp.log import access_logger

from .config import ENV_PREFIX, FIELD_PARSERS, config_from_env
from .server import make_app, url_host


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.llm",
        description="Local simulator of the OpenAI and Anthropic HTTP APIs (demo upstream). "
        "Every option also reads DEMO_UPSTREAM_<OPTION> from the environment; "
        "per-request x-demo-* headers override both.",
    )
    env = os.environ
    parser.add_argument(
        "--host", default=env.get(ENV_PREFIX + "HOST", "127.0.0.1"), help="bind address"
    )
    parser.add_argument(
        "--port", type=int, default=int(env.get(ENV_PREFIX + "PORT", "8002")), help="bind port"
    )
    parser.add_argument("--latency-ms", type=float, help="delay before the first byte")
    parser.add_argument("--chunk-delay-ms", type=float, help="delay between stream chunks")
    parser.add_argument(
        "--linger-ms", type=float, help="keep a stream open this long after its last event"
    )
    parser.add_argument("--completion-tokens", type=int, help="completion tokens (default 16)")
    parser.add_argument("--prompt-tokens", type=int, help="override the prompt token estimate")
    parser.add_argument("--cached-tokens", type=int, help="cached prompt tokens to report")
    parser.add_argument(
        "--prompt-cache-s", type=float, help="seconds a prompt prefix stays cached (0: no cache)"
    )
    parser.add_argument(
        "--cache-creation-tokens", type=int, help="Anthropic cache_creation_input_tokens"
    )
    parser.add_argument(
        "--error", help="inject an error: HTTP status, disconnect, cut, no-usage or none"
    )
    parser.add_argument("--error-rate", type=float, help="probability (0-1) of --error")
    parser.add_argument("--chunks", type=int, help="content chunks per stream")
    parser.add_argument("--retry-after", type=int, help="Retry-After seconds on 429")
    parser.add_argument("--record-limit", type=int, help="recent requests kept (0 disables)")
    parser.add_argument("--models", help="comma-separated model ids for /v1/models")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m simulators.llm --host 127.0.0.1 --port 8002``."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_env()
        raw_overrides = {
            name: getattr(args, name)
            for name in FIELD_PARSERS
            if getattr(args, name, None) is not None
        }
        # Run flags through the same parsers as headers/env so the rules are identical.
        cfg = replace(cfg, **{k: FIELD_PARSERS[k](str(v)) for k, v in raw_overrides.items()})
    except ValueError as exc:
        parser.error(str(exc))

    loop: asyncio.AbstractEventLoop | None = None
    if not args.no_uvloop:
        try:
            import uvloop  # optional speed-up

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = None

    app = make_app(cfg)
    url = f"http://{url_host(args.host)}:{args.port}/v1"
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=access_logger if args.access_log else None,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        print=lambda *_: print(f"demo upstream listening on {url}", flush=True),
        loop=loop,
    )
