# syntax=docker/dockerfile:1
# TokenPapa's one image: the portal, the relay, the Celery worker and beat, and the one-shot
# migrate job all run it with different commands (see docker-compose.yml).

# --- builder: the locked dependencies in a venv, translations compiled, static files collected
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
# Every package pinned and checked against the lock file's hashes.
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock
WORKDIR /app
COPY . .
# The .mo files (msgfmt, as `make messages-compiled`), then the static files for WhiteNoise's
# manifest storage (DEBUG=0).
# The secrets below exist only for this build step: settings refuse to load without them.
RUN for po in locale/*/LC_MESSAGES/django.po; do msgfmt --check-format -o "${po%.po}.mo" "$po"; done \
    && DEBUG=0 TP_VAR_DIR=/app/var SECRET_KEY=build-only TP_KEY_PEPPER=build-only \
       TP_SECRETS_KEYS="$(python -c 'from core.secrets import generate_key; print(generate_key())')" \
       python manage.py collectstatic --no-input --verbosity 0

# --- final: the venv and the code, run as an unprivileged user
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=portal.settings \
    DEBUG=0 \
    TP_VAR_DIR=/app/var \
    TP_HOST=0.0.0.0
RUN groupadd --system --gid 10001 tokenpapa \
    && useradd --system --uid 10001 --gid tokenpapa --home-dir /app --shell /usr/sbin/nologin tokenpapa
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=root:root /app /app
WORKDIR /app
# var/ holds what the processes write: the relay's usage spool (a volume in compose) and beat's
# schedule; the code and the collected static files stay read-only for the service user.
RUN mkdir -p /app/var/spool /app/var/mail \
    && chown -R tokenpapa:tokenpapa /app/var/spool /app/var/mail \
    && chown tokenpapa:tokenpapa /app/var
USER tokenpapa:tokenpapa
EXPOSE 8000 8001
CMD ["python", "-m", "serving", "portal"]
