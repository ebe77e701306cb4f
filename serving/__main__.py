"""Serve the portal or the relay: ``python -m serving portal|relay [--host H] [--port P]
[--workers N]``.

Both run under uvicorn with httptools and the deadlines of ``serving.protocol``, so slow or
half-open connections cannot hold the server: the portal's pages are Django's ASGI handler (its
views run in threads; reading a request never takes one), the relay is its own ASGI app.

Whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` is believed is decided by one setting,
``TP_TRUSTED_PROXIES`` (addresses or networks, comma-separated; empty: nobody's). The portal
lets uvicorn apply it (the client address and scheme Django sees); the relay applies it itself
(``relay.limits.client_ip``) and uvicorn's own proxy handling, which trusts 127.0.0.1 by
default, is switched off.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import uvicorn

SERVICES = {
    # name: (ASGI app, default port, workers variable, default workers)
    "portal": ("portal.asgi:application", 8000, "TP_PORTAL_WORKERS", 2),
    "relay": ("relay.app:app", 8001, "TP_RELAY_WORKERS", 1),
}


def trusted_proxies() -> list[str]:
    return [p.strip() for p in os.environ.get("TP_TRUSTED_PROXIES", "").split(",") if p.strip()]


def log_config(level: str) -> dict[str, Any]:
    """Every logger's records (uvicorn's, the app's) to stderr, one a line: JSON objects with the
    request's id (``core.jsonlog``, named here, not imported) or plain text, by
    ``TP_LOG_FORMAT`` (``json`` unless ``DEBUG`` is on)."""
    debug = os.environ.get("DEBUG", "1").strip().lower() in ("1", "true", "yes", "on")
    chosen = os.environ.get("TP_LOG_FORMAT", "").strip().lower() or ("text" if debug else "json")
    if chosen not in ("json", "text"):
        raise SystemExit(f"TP_LOG_FORMAT must be json or text, not {chosen!r}")
    formatter: dict[str, Any] = (
        {"()": "core.jsonlog.JsonFormatter"}
        if chosen == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's own loggers pass their records on to the root's handler.
        "loggers": {
            name: {"level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--host", default=os.environ.get("TP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)

    app, port, workers_var, workers = SERVICES[args.service]
    if args.service == "portal":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        # Django's requests may run in any thread: connections come from a pool, not one kept
        # per thread (see portal/settings.py).
        os.environ.setdefault("DB_POOL", "1")
        # Above this, a body is refused before it is read (the relay answers 413 itself).
        os.environ.setdefault("TP_HTTP_MAX_BODY_BYTES", str(10 * 1024 * 1024))
    trusted = trusted_proxies()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port or port,
        workers=args.workers or int(os.environ.get(workers_var) or workers),
        loop="uvloop",
        http="serving.protocol:GuardedHttpToolsProtocol",
        ws="none",
        lifespan="on" if args.service == "relay" else "off",
        proxy_headers=args.service == "portal" and bool(trusted),
        forwarded_allow_ips=trusted or [],
        timeout_keep_alive=int(os.environ.get("TP_HTTP_KEEPALIVE_TIMEOUT") or 20),
        limit_concurrency=int(os.environ.get("TP_HTTP_MAX_CONNECTIONS") or 4096),
        access_log=args.service == "portal",
        server_header=False,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
    )


if __name__ == "__main__":
    main()
