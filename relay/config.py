"""The relay's settings, from the environment (it shares the portal's names, not its code)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from core import byok, secrets

from .breaker import BreakerSettings

BASE_DIR = Path(__file__).resolve().parent.parent
TRUE = frozenset(("1", "true", "yes", "on"))  # as the portal's settings read a flag


def _pepper(var_dir: Path) -> bytes:
    value = os.environ.get("TP_KEY_PEPPER")
    if value:
        return value.encode()
    path = os.environ.get("TP_KEY_PEPPER_FILE")
    stored = Path(path) if path else var_dir / "tp_key_pepper"
    try:
        return stored.read_text().strip().encode()
    except FileNotFoundError:
        raise SystemExit(
            "TP_KEY_PEPPER is not set and var/tp_key_pepper does not exist: run "
            "`manage.py migrate` once (development) or set TP_KEY_PEPPER."
        ) from None


def _secrets_keys(var_dir: Path) -> tuple[str, ...]:
    """The Fernet keys provider API keys are encrypted with (newest first), as the portal
    reads them: TP_SECRETS_KEYS, TP_SECRETS_KEYS_FILE, or var/ in development."""
    value = os.environ.get("TP_SECRETS_KEYS")
    if not value:
        path = os.environ.get("TP_SECRETS_KEYS_FILE")
        stored = Path(path) if path else var_dir / "tp_secrets_keys"
        try:
            value = stored.read_text().strip()
        except FileNotFoundError:
            raise SystemExit(
                "TP_SECRETS_KEYS is not set and var/tp_secrets_keys does not exist: run "
                "`manage.py migrate` once (development) or set TP_SECRETS_KEYS."
            ) from None
    try:
        keys = tuple(secrets.parse_keys(value))
    except secrets.SecretError as exc:
        raise SystemExit(str(exc)) from None
    if not keys:
        raise SystemExit("TP_SECRETS_KEYS holds no key")
    return keys


def _fee_percent() -> Decimal:
    try:
        return byok.fee_percent(os.environ.get("TP_BYOK_FEE_PERCENT"))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _breaker() -> BreakerSettings:
    env = os.environ.get
    return BreakerSettings(
        failures=int(env("TP_BREAKER_FAILURES", 5)),
        window=float(env("TP_BREAKER_WINDOW", 60)),
        min_requests=int(env("TP_BREAKER_MIN_REQUESTS", 20)),
        error_rate=int(env("TP_BREAKER_ERROR_RATE", 50)),
        cooldown=float(env("TP_BREAKER_COOLDOWN", 30)),
        max_cooldown=float(env("TP_BREAKER_MAX_COOLDOWN", 600)),
        refresh=float(env("TP_BREAKER_REFRESH", 1)),
        probe_lease=float(env("TP_BREAKER_PROBE_LEASE", 60)),
    )


@dataclass(frozen=True)
class Config:
    redis_url: str
    broker_url: str
    pepper: bytes
    spool_dir: Path
    # Opens the provider API keys in the catalog (see core.secrets); none: keys stay closed.
    secrets_keys: tuple[str, ...] = ()
    # REDIS_URL names one master of a Redis Cluster (TP_REDIS_CLUSTER=1); the broker is then a
    # plain Redis of its own (Celery cannot use a cluster).
    redis_cluster: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    # Request bodies read or held at once by this process, in bytes (see Relay.read_body).
    body_budget_bytes: int = 512 * 1024 * 1024
    connect_timeout: float = 10.0
    # Until the upstream's first byte (a long prompt or a reasoning model takes a while)...
    first_byte_timeout: float = 300.0
    # ...and then between two chunks of a stream (or while a whole answer is read).
    chunk_timeout: float = 120.0
    trusted_proxies: tuple[str, ...] = ()
    # Usage events per batch at most: one Celery task records a batch in one transaction.
    batch_size: int = 1000
    batch_interval: float = 0.25
    replay_interval: float = 5.0
    upstream_connections: int = 1000
    redis_connections: int = 64
    # When set, GET /metrics wants "Authorization: Bearer <token>" (see relay.metrics).
    metrics_token: str = ""
    # How long a conversation keeps to the route that answered it since its last request, in
    # seconds; 0: no sticky routes (see relay.sticky).
    sticky_ttl: int = 300
    # Route health: each route's circuit breaker (see relay.breaker; TP_BREAKER_*).
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # What a request served with the account's own provider key pays: this per cent of the
    # list price (TP_BYOK_FEE_PERCENT, as the portal reads it; core.byok).
    byok_fee_percent: Decimal = byok.DEFAULT_FEE_PERCENT
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Config:
        var_dir = Path(os.environ.get("TP_VAR_DIR", BASE_DIR / "var"))
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
        cluster = os.environ.get("TP_REDIS_CLUSTER", "").strip().lower() in TRUE
        broker_url = os.environ.get("CELERY_BROKER_URL", redis_url)
        if cluster and broker_url == redis_url:
            raise SystemExit(
                "TP_REDIS_CLUSTER is set: CELERY_BROKER_URL must name a plain (non-cluster) "
                "Redis of its own."
            )
        return cls(
            redis_url=redis_url,
            broker_url=broker_url,
            redis_cluster=cluster,
            pepper=_pepper(var_dir),
            secrets_keys=_secrets_keys(var_dir),
            spool_dir=Path(os.environ.get("TP_SPOOL_DIR", var_dir / "spool")),
            max_body_bytes=int(os.environ.get("TP_RELAY_MAX_BODY_BYTES", 32 * 1024 * 1024)),
            body_budget_bytes=int(os.environ.get("TP_RELAY_BODY_BUDGET_BYTES", 512 * 1024 * 1024)),
            connect_timeout=float(os.environ.get("TP_UPSTREAM_CONNECT_TIMEOUT", 10)),
            first_byte_timeout=float(os.environ.get("TP_UPSTREAM_FIRST_BYTE_TIMEOUT", 300)),
            chunk_timeout=float(os.environ.get("TP_UPSTREAM_CHUNK_TIMEOUT", 120)),
            redis_connections=int(os.environ.get("TP_RELAY_REDIS_CONNECTIONS", 64)),
            batch_size=int(os.environ.get("TP_USAGE_BATCH_SIZE", 1000)),
            batch_interval=float(os.environ.get("TP_USAGE_BATCH_INTERVAL", 0.25)),
            replay_interval=float(os.environ.get("TP_SPOOL_REPLAY_INTERVAL", 5)),
            trusted_proxies=tuple(
                p.strip() for p in os.environ.get("TP_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            metrics_token=os.environ.get("TP_METRICS_TOKEN", ""),
            sticky_ttl=int(os.environ.get("TP_STICKY_ROUTE_TTL", 300)),
            breaker=_breaker(),
            byok_fee_percent=_fee_percent(),
        )
