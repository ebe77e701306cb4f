"""One settings module, read from the environment.

Development defaults (DEBUG on, no DATABASE_URL) give an embedded set-up: SQLite and secrets
under ``var/``. Production sets ``DEBUG=0`` and must give SECRET_KEY, TP_KEY_PEPPER and
TP_SECRETS_KEYS (or their ``*_FILE`` variants) explicitly.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from core import byok as _byok
from core import secrets as secretbox

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TP_VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret(name: str, *, generate: bool, make: Callable[[], str] | None = None) -> str:
    """From NAME, from the file named by NAME_FILE, or (development only) generated once into
    var/ (by ``make``, a random string by default) so that restarts keep sessions, key hashes
    and encrypted provider keys valid."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    if not generate:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set when DEBUG is off")
    stored = VAR_DIR / name.lower()
    if not stored.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make() if make else secrets.token_urlsafe(48))
    return stored.read_text().strip()


DEBUG = envbool("DEBUG", True)
SECRET_KEY = secret("SECRET_KEY", generate=DEBUG)
TP_KEY_PEPPER = secret("TP_KEY_PEPPER", generate=DEBUG).encode()
# Fernet keys for secrets at rest (provider API keys), comma-separated, newest first; the relay
# reads the same variable. Never in the database. Rotation: `manage.py rotatesecrets`.
try:
    TP_SECRETS_KEYS = secretbox.parse_keys(
        secret("TP_SECRETS_KEYS", generate=DEBUG, make=secretbox.generate_key)
    )
except secretbox.SecretError as _exc:
    raise ImproperlyConfigured(str(_exc)) from None
if not TP_SECRETS_KEYS:
    raise ImproperlyConfigured("TP_SECRETS_KEYS (or TP_SECRETS_KEYS_FILE) holds no key")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "lib",
    "accounts",
    "catalog",
    "keys",
    "billing",
    "portal",
]

MIDDLEWARE = [
    # The request id (for the JSON log lines) and the request metrics (portal/observability.py).
    "portal.observability.RequestObservability",
    "portal.middleware.AsyncStreamingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.language.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "allauth.usersessions.middleware.UserSessionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.site",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'tokenpapa.sqlite3'}",
        conn_max_age=envint("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and envbool("DB_POOL", False):
    # The portal's pages run under ASGI, each request in a thread of its own: connections come
    # from psycopg's pool (a connection kept per thread would be opened anew for every request).
    # `python -m serving portal` sets DB_POOL=1; the worker keeps its one connection instead.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 1, "max_size": envint("DB_POOL_MAX_SIZE", 20), "timeout": 10}
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded demo runs portal, worker and beat against one file: wait for locks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
# The relay's state (balances, holds, limits, key records, the catalog) on a Redis Cluster:
# REDIS_URL names any one of its masters. Celery's broker and Django's cache cannot use a
# cluster, so CELERY_BROKER_URL and CACHE_URL must then name a plain Redis (checked at start).
TP_REDIS_CLUSTER = envbool("TP_REDIS_CLUSTER", False)
CACHE_URL = os.environ.get("CACHE_URL", REDIS_URL)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "tp-cache",
    }
}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"

# django-allauth: email is the only identifier; verification is mandatory.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = False
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_PREVENT_ENUMERATION = True
# Every entered address in one stored form, look-alikes refused (accounts.emails).
ACCOUNT_ADAPTER = "accounts.auth.AccountAdapter"
ACCOUNT_FORMS = {
    "login": "accounts.auth.LoginForm",
    "reset_password": "accounts.auth.ResetPasswordForm",
    "change_email": "accounts.auth.ChangeEmailForm",
}
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
}
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[TokenPapa] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
# One address per account; a change is verified at the new address before it takes effect.
ACCOUNT_CHANGE_EMAIL = True
# Changing the email or password, two-factor settings and management keys ask for the
# password (or a second factor) again when the last confirmation is older than this.
ACCOUNT_REAUTHENTICATION_REQUIRED = True
ACCOUNT_REAUTHENTICATION_TIMEOUT = 300

# Two-factor authentication: an authenticator app (TOTP) with recovery codes, and passkeys.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_TOTP_ISSUER = os.environ.get("MFA_TOTP_ISSUER", "TokenPapa")
MFA_TOTP_TOLERANCE = 1  # one 30-second step either way, for clocks that drift
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG  # http://127.0.0.1 in development

# Signed-in sessions are listed and can be ended from the account pages.
USERSESSIONS_TRACK_ACTIVITY = True

EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "TokenPapa <noreply@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keys.authentication.ManagementKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_RATES": {"user": "600/min"},
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TokenPapa API",
    "DESCRIPTION": "Manage API keys. Authenticate with a management key "
    "(Authorization: Bearer tp-mk-...) or a browser session.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two models have a "status": name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "UsageStatusEnum": "billing.models.UsageEvent.Status",
        "KeyStatusEnum": "keys.models.ApiKey.Status",
    },
}

# Content-Security-Policy: no inline scripts anywhere; nothing from other origins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

LANGUAGE_CODE = "en"
# Each language named in its own tongue in the switcher (portal/templates: language names come
# from Django's own tables, translated); the relay's errors stay in English.
LANGUAGES = [
    ("en", _("English")),
    ("fr", _("French")),
    ("de", _("German")),
    ("es", _("Spanish")),
    ("it", _("Italian")),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
# Numbers, money and dates in the reader's format (1 234,50 in French); machine-readable values
# (inputs, data attributes, CSV/JSON, the API) are written unlocalized.
USE_THOUSAND_SEPARATOR = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    # Probes and scrapers speak plain HTTP to the container (docs/observability.md).
    SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
# Whose X-Forwarded-For / X-Forwarded-Proto is believed: TP_TRUSTED_PROXIES, one setting for the
# portal's server (uvicorn rewrites the client address and scheme only for those peers: see
# serving/__main__.py) and the relay. Django itself trusts no forwarded header.

# Celery: the worker and beat load Django; the relay sends tasks by name without it.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
# A task a dead worker had taken is handed out again after this many seconds (acks_late).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 600)}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# TokenPapa
TP_RELAY_BASE_URL = os.environ.get("TP_RELAY_BASE_URL", "http://127.0.0.1:8001/v1")
TP_DEMO_UPSTREAM_URL = os.environ.get("TP_DEMO_UPSTREAM_URL", "")
TP_CATALOG_FILE = Path(os.environ.get("TP_CATALOG_FILE", BASE_DIR / "catalog" / "catalog.toml"))
TP_HOLD_MAX_AGE_SECONDS = envint("TP_HOLD_MAX_AGE_SECONDS", 3600)
# Raw usage events are kept this many months (whole monthly partitions dropped after), 0 = for
# ever; the hourly and daily rollups are kept for ever (billing.partitions).
TP_USAGE_RETENTION_MONTHS = envint("TP_USAGE_RETENTION_MONTHS", 13)
# Leaked-key reports (keys.leaks): a shared HMAC secret, and/or secret scanners' ECDSA public
# keys as JSON {"key id": "-----BEGIN PUBLIC KEY-----..."} (GitHub's partner programme).
TP_SECRET_SCANNING_HMAC_SECRET = os.environ.get("TP_SECRET_SCANNING_HMAC_SECRET", "")
TP_SECRET_SCANNING_PUBLIC_KEYS: dict[str, str] = json.loads(
    os.environ.get("TP_SECRET_SCANNING_PUBLIC_KEYS") or "{}"
)
# Read by the relay too (it shares the names, not the code); shown in the docs.
TP_RELAY_MAX_BODY_BYTES = envint("TP_RELAY_MAX_BODY_BYTES", 32 * 1024 * 1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Payments
# Card (Stripe Checkout), PayPal (Orders v2) and crypto (BTCPay Server Greenfield). A provider
# is offered when its credentials are set. `make run` points all three at the local simulators
# (python -m simulators.payments); production settings refuse loopback API bases.
from decimal import Decimal as _Decimal  # noqa: E402


def envmoney(name: str, default: str) -> _Decimal:
    return _Decimal(os.environ.get(name) or default)


STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
PAYPAL_CLIENT_ID = os.environ.get("PAYPAL_CLIENT_ID", "")
PAYPAL_CLIENT_SECRET = os.environ.get("PAYPAL_CLIENT_SECRET", "")
PAYPAL_WEBHOOK_ID = os.environ.get("PAYPAL_WEBHOOK_ID", "")
PAYPAL_API_BASE = os.environ.get("PAYPAL_API_BASE", "https://api-m.paypal.com").rstrip("/")
BTCPAY_URL = os.environ.get("BTCPAY_URL", "").rstrip("/")
BTCPAY_API_KEY = os.environ.get("BTCPAY_API_KEY", "")
BTCPAY_STORE_ID = os.environ.get("BTCPAY_STORE_ID", "")
BTCPAY_WEBHOOK_SECRET = os.environ.get("BTCPAY_WEBHOOK_SECRET", "")
# Processing fees added on top of the credit and shown before paying: percent + fixed USD.
TP_FEES = {
    "stripe": (envmoney("TP_FEE_STRIPE_PERCENT", "2.9"), envmoney("TP_FEE_STRIPE_FIXED", "0.30")),
    "paypal": (envmoney("TP_FEE_PAYPAL_PERCENT", "3.49"), envmoney("TP_FEE_PAYPAL_FIXED", "0.49")),
    "btcpay": (envmoney("TP_FEE_BTCPAY_PERCENT", "0"), envmoney("TP_FEE_BTCPAY_FIXED", "0")),
}
TP_TOPUP_MINIMUM = envmoney("TP_TOPUP_MINIMUM", "5")
TP_TOPUP_MAXIMUM = envmoney("TP_TOPUP_MAXIMUM", "10000")
TP_TOPUP_PRESETS = [_Decimal(v) for v in envlist("TP_TOPUP_PRESETS", "5,10,25,50,100")]
TP_SIGNUP_CREDIT = envmoney("TP_SIGNUP_CREDIT", "0")
# What a request served with the account's own provider key (BYOK) pays: this per cent of the
# list price, instead of the price (the relay reads the same variable; core.byok).
TP_BYOK_FEE_PERCENT = _byok.fee_percent(os.environ.get("TP_BYOK_FEE_PERCENT"))
# How long the check of a provider key (GET <base URL>/models) may take when it is saved.
TP_BYOK_CHECK_TIMEOUT = float(os.environ.get("TP_BYOK_CHECK_TIMEOUT") or 10)
TP_WEBHOOK_TOLERANCE_SECONDS = envint("TP_WEBHOOK_TOLERANCE_SECONDS", 300)
TP_PAYMENT_HTTP_TIMEOUT = float(os.environ.get("TP_PAYMENT_HTTP_TIMEOUT") or 20)
TP_AUTO_TOPUP_MAX_FAILURES = envint("TP_AUTO_TOPUP_MAX_FAILURES", 3)
TP_AUTO_TOPUP_RETRY_SECONDS = envint("TP_AUTO_TOPUP_RETRY_SECONDS", 3600)
TP_SITE_URL = os.environ.get("TP_SITE_URL", "http://127.0.0.1:8000").rstrip("/")  # in emails
TP_BILLING_OPERATOR_EMAILS = envlist("TP_BILLING_OPERATOR_EMAILS", "")
TP_COMPANY_NAME = os.environ.get("TP_COMPANY_NAME", "TokenPapa")
TP_COMPANY_ADDRESS = os.environ.get("TP_COMPANY_ADDRESS", "").replace("\\n", "\n")
TP_COMPANY_VAT_ID = os.environ.get("TP_COMPANY_VAT_ID", "")
TP_COMPANY_EMAIL = os.environ.get("TP_COMPANY_EMAIL", "")
TP_COMPANY_REGISTRATION = os.environ.get("TP_COMPANY_REGISTRATION", "")
if not DEBUG:
    for _name in ("STRIPE_API_BASE", "PAYPAL_API_BASE", "BTCPAY_URL"):
        _host = (urlsplit(globals()[_name]).hostname or "").lower()
        if _host in {"localhost", "0.0.0.0", "::1"} or _host.startswith("127."):  # noqa: S104
            raise ImproperlyConfigured(
                f"{_name} points at {_host}: the payment simulators are for development only"
            )
