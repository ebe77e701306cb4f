"""docker-compose.yml, the Dockerfile and .env.example, checked without a container engine (CI
has none): the compose file against the Compose Specification's JSON schema (vendored in
tests/data, from compose-spec/compose-spec), and by `docker compose config` where that works,
plus what production needs of it: health checks, restart policies, the start order, a durable
Redis, an unprivileged image, and every setting the code reads documented in .env.example."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serving.__main__ import SERVICES

from .conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "portal", "relay", "worker", "beat")
LONG_RUNNING = ("postgres", "redis", "portal", "relay", "worker", "beat")
# Where the application's settings are read (the simulators have their own, for development).
SETTINGS_SOURCES = (
    "accounts",
    "billing",
    "catalog",
    "core",
    "keys",
    "lib",
    "portal",
    "relay",
    "serving",
)
READ = re.compile(
    r"(?:environ\.get\(|environ\[|getenv\(|\b(?:env\w*|secret|_number)\()"
    r'\s*"([A-Z][A-Z0-9_]*)"'
)
SECRET = re.compile(r'\bsecret\(\s*"([A-Z][A-Z0-9_]*)"')


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        found = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line.strip())
        if found:
            names.add(found.group(1))
    return names


def names_read_by_the_code() -> set[str]:
    files = [ROOT / "manage.py"]
    for package in SETTINGS_SOURCES:
        files += [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    texts = [file.read_text() for file in files]
    names = {name for text in texts for name in READ.findall(text)}
    # Read under a name built at run time: a secret's NAME_FILE, the servers' worker counts.
    names |= {f"{name}_FILE" for text in texts for name in SECRET.findall(text)}
    names |= {workers_variable for _, _, workers_variable, _ in SERVICES.values()}
    return names


def test_the_compose_file_follows_the_compose_specification(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors
    # The schema catches what it should: a misspelt key is refused.
    broken = {**compose, "services": {**compose["services"], "x": {"image": "a", "restrat": 1}}}
    assert not validator.is_valid(broken)

    # Compose itself, where its CLI plugin is installed (it needs no daemon for `config`).
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
        shutil.copy(ROOT / ".env.example", tmp_path / ".env")
        checked = subprocess.run(
            [docker, "compose", "config", "-q"], cwd=tmp_path, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr


def test_every_service_is_watched_restarted_and_started_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(APP_SERVICES + LONG_RUNNING) <= set(services)
    for name in LONG_RUNNING:
        service = services[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] in ("always", "unless-stopped"), name
    assert services["migrate"]["restart"] == "no"  # one-shot
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name in ("portal", "relay"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
    assert "inspect ping -d celery@$$HOSTNAME" in services["worker"]["healthcheck"]["test"][1]

    for name in ("portal", "relay", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    migrate = " ".join(services["migrate"]["command"])
    for step in ("migrate --no-input", "loadcatalog", "importcatalog", "syncredis"):
        assert f"manage.py {step}" in migrate

    # Served by uvicorn through `python -m serving` (not gunicorn); Celery for the rest.
    assert services["portal"]["command"][:4] == ["python", "-m", "serving", "portal"]
    assert services["relay"]["command"][:4] == ["python", "-m", "serving", "relay"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "portal", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    for name in APP_SERVICES:
        assert services[name]["env_file"] == ".env", name
        assert services[name]["image"] == services["portal"]["image"], name


def test_redis_keeps_every_write_and_evicts_nothing(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])
    assert any(
        v.endswith(":/var/lib/postgresql/data") for v in compose["services"]["postgres"]["volumes"]
    )


def test_the_image_is_built_from_the_locks_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2
    assert all(stage.startswith("python:3.11-slim") for stage in stages)
    builder, final = stages
    assert "--require-hashes" in builder and "requirements.lock" in builder
    assert "msgfmt" in builder and "collectstatic" in builder
    assert "COPY --from=builder /opt/venv" in final
    users = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", ".env"} <= set(ignored)


def test_every_setting_the_services_read_is_documented() -> None:
    documented = example_names()
    read = names_read_by_the_code()
    assert read, "the scan of the settings found nothing"
    assert not read - documented, f"missing from .env.example: {sorted(read - documented)}"
    # Per-provider keys are named by the catalog's slugs: documented by their pattern.
    text = (ROOT / ".env.example").read_text()
    assert "TP_PROVIDER_" in text and "_API_KEY" in text and "_BASE_URL" in text
    # What compose itself interpolates is there too, and nothing documented is stale.
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert not interpolated - documented
    stale = documented - read - interpolated - {"TP_PROVIDER_OPENAI_API_KEY"}
    stale -= {"TP_PROVIDER_OPENAI_BASE_URL"}
    assert not stale, f"documented but read by nothing: {sorted(stale)}"
    # Every documented line has its comment.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[A-Z][A-Z0-9_]*=", line):
            above = next(prev for prev in reversed(lines[:i]) if not re.match(r"[A-Z]", prev))
            assert above.startswith("#"), f"no comment above {line.split('=')[0]}"
