# TokenPapa. `make run` starts the whole stack on embedded defaults; `make test` runs every test
# against PostgreSQL and Redis on 127.0.0.1 (override with DATABASE_URL / REDIS_URL).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tokenpapa
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test test-cluster fuzz lint typecheck migrations-check install install-dev browser bench bench-catalog bench-usage clean \
  gettext messages messages-compiled

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"

# Installs exactly the locked versions, each checked against its hash.
$(VENV)/.installed: requirements.lock | $(VENV)/bin/python
	$(PIP) install --quiet --require-hashes --no-deps -r requirements.lock
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock | $(VENV)/bin/python
	$(PIP) install --quiet --require-hashes --no-deps -r requirements-dev.lock
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed messages-compiled
	bin/run

# Translations: locale/<lang>/LC_MESSAGES/django.po is the source (committed); the .mo files are
# compiled from it here (git-ignored), so a checkout never runs stale ones. gettext's msgfmt
# does it, installed like chromium below when missing.
PO_FILES := $(wildcard locale/*/LC_MESSAGES/django.po)
MO_FILES := $(PO_FILES:.po=.mo)

gettext:
	@command -v msgfmt >/dev/null 2>&1 || { \
	  echo "Installing gettext for the translations"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gettext >/dev/null; }

# What `manage.py compilemessages` runs, one catalogue at a time when its .po changed.
locale/%/LC_MESSAGES/django.mo: locale/%/LC_MESSAGES/django.po | gettext
	msgfmt --check-format -o $@ $<

messages-compiled: $(MO_FILES)

# After marking new strings: extract them into the .po files (bin/messages holds the options;
# tests/test_translations.py checks nothing is left unextracted or untranslated).
messages: $(VENV)/.installed gettext
	$(PY) bin/messages

# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Then the relay's billing and limit tests once more with the relay's state on a local
# three-master Redis Cluster (tests/redis_cluster.py; `make test CLUSTER=0` skips it), Celery's
# broker and the cache on TEST_PLAIN_REDIS_URL.
CLUSTER ?= 1
TEST_PLAIN_REDIS_URL ?= redis://127.0.0.1:6379/14

test: $(VENV)/.installed-dev browser messages-compiled
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_ALLOW_ASYNC_UNSAFE=true \
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ "$(CLUSTER)" = 1 ]; then $(MAKE) --no-print-directory test-cluster; fi

test-cluster: $(VENV)/.installed-dev
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	TP_TEST_PLAIN_REDIS_URL=$(TEST_PLAIN_REDIS_URL) \
	DJANGO_ALLOW_ASYNC_UNSAFE=true \
	$(PY) -m tests.redis_cluster -q $(CLUSTER_PYTEST_ARGS)

# The property and fuzz tests with new random examples on each run (`make test` draws the same
# ones every time, so that CI is reproducible). Run it often; a few minutes each time.
fuzz: $(VENV)/.installed-dev
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_ALLOW_ASYNC_UNSAFE=true HYPOTHESIS_PROFILE=fuzz \
	$(PY) -m pytest -q -p no:randomly tests/test_webhook_fuzz.py tests/test_api_schema.py \
	  tests/test_emails.py tests/test_holds.py tests/test_sse.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(MAKE) typecheck

# The relay, the servers, the core and the simulators strictly; the Django apps with
# django-stubs and djangorestframework-stubs (settings in pyproject.toml).
typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy --strict relay serving core simulators
	$(VENV)/bin/mypy accounts catalog keys billing portal lib

migrations-check: $(VENV)/.installed-dev
	$(PY) manage.py makemigrations --check --dry-run

# Relay benchmark (direct vs relay vs LiteLLM and Portkey's gateway), offline on 127.0.0.1;
# see tests/bench/README.md.
# `make bench BENCH_ARGS=--quick` for a ~2-3 minute run; `$(PY) tests/bench/run.py --help`.
bench: $(VENV)/.installed-dev
	$(PY) tests/bench/run.py $(BENCH_ARGS)

# Server time of the catalog pages at 500 listed models (target: the list in at most 50 ms), in
# a throwaway PostgreSQL database on 127.0.0.1; `$(PY) tests/bench/catalog_pages.py --help`.
bench-catalog: $(VENV)/.installed-dev
	$(PY) tests/bench/catalog_pages.py $(BENCH_ARGS)

# The usage pages at ten million events (issue 14): builds the data set into USAGE_BENCH_URL
# once (kept; ~15-25 minutes), migrates it, then times the pages (tests/bench/usage_pages.py).
USAGE_BENCH_URL ?= postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage
bench-usage: $(VENV)/.installed-dev
	@if ! psql "$(USAGE_BENCH_URL)" -c "SELECT 1 FROM accounts_user WHERE email = 'heavy@example.com'" 2>/dev/null | grep -q 1; then \
	  $(PY) tests/bench/usage_data.py --events 10000000 --record 2000 --keep --database-url "$(USAGE_BENCH_URL)"; fi
	DATABASE_URL="$(USAGE_BENCH_URL)" $(PY) manage.py migrate --verbosity 0
	$(PY) tests/bench/usage_pages.py --database-url "$(USAGE_BENCH_URL)" $(BENCH_ARGS)

clean:
	rm -rf var/staticfiles var/mail var/spool
