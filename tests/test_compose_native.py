"""The compose topology, run natively: containers cannot run on the CI machine, so the migrate,
portal, relay, worker and beat services of docker-compose.yml run here with THEIR commands and
environment (.env.example's values, the service's own, and a few overrides for this machine: a
private database and Redis, free ports, the demo upstream, e-mail into files), and a person
goes through the product over HTTP: signs up, verifies the address, signs in, is credited by the
operator, creates a key, calls the relay with the OpenAI SDK and sees the usage recorded."""

from __future__ import annotations

import email
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from openai import OpenAI

from core.secrets import generate_key
from simulators.llm import start_in_thread

from .conftest import PASSWORD, ROOT, PrivateRedis, free_port, wait_until

DATABASE = "tp_compose_test"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
APP_SERVICES = ("migrate", "portal", "relay", "worker", "beat")
EMAIL = "compose-smoke@example.com"
FORWARDED = {"X-Forwarded-Proto": "https"}  # as the TLS proxy in front of the portal sends it


def dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def postgres_up() -> bool:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def database() -> Iterator[str]:
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    yield f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


class Topology:
    """The compose services as process groups of this machine."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        self.directory = directory
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {"portal": free_port(), "relay": free_port()}

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.compose["services"][name])

    def environment(self, name: str) -> dict[str, str]:
        own = self.service(name).get("environment") or {}
        return {
            "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",  # the image's venv first
            "HOME": str(self.directory),
            "LANG": "C.UTF-8",
            "HOSTNAME": socket.gethostname(),
            **{k: str(v) for k, v in own.items()},
            **self.env,
            # The service's tmpfs: an empty directory of its own at each start.
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(
                prefix=f"metrics-{name}-", dir=self.directory
            ),
        }

    def command(self, name: str) -> list[str]:
        command = list(self.service(name)["command"])
        if name in self.ports:  # this machine's free port, on the loopback interface only
            command[command.index("--port") + 1] = str(self.ports[name])
            command[command.index("--host") + 1] = "127.0.0.1"
        return command

    def run_once(self, name: str, timeout: float = 120) -> None:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            done = subprocess.run(
                self.command(name),
                cwd=ROOT,
                env=self.environment(name),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        assert done.returncode == 0, f"{name} failed:\n{log.read_text()[-3000:]}"

    def start(self, name: str) -> None:
        out = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            self.command(name),
            cwd=ROOT,
            env=self.environment(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: uvicorn's and celery's children
        )
        out.close()

    def alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.directory / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{log}")

    def healthcheck(self, name: str) -> subprocess.CompletedProcess[bytes]:
        """The service's compose health check, run here as compose runs it in the container
        (the container's port replaced by this machine's)."""
        kind, *test = self.service(name)["healthcheck"]["test"]
        if kind == "CMD-SHELL":
            test = ["sh", "-c", test[0].replace("$$", "$")]
        if name in self.ports:
            port = {"portal": ":8000/", "relay": ":8001/"}[name]
            test = [part.replace(port, f":{self.ports[name]}/") for part in test]
        return subprocess.run(
            test, cwd=ROOT, env=self.environment(name), capture_output=True, timeout=30, check=False
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def ready(url: str, headers: dict[str, str] | None = None) -> bool:
    """/readyz (readiness) where the server has it, else its liveness /healthz."""
    for path in ("/readyz", "/healthz"):
        try:
            response = requests.get(url + path, headers=headers, timeout=5, allow_redirects=False)
        except requests.RequestException:  # not listening yet, or still starting (a timeout)
            return False
        if response.status_code != 404:
            return response.status_code == 200
    return False


class Browser:
    """A person's HTTP client behind the TLS proxy: cookies are kept by hand (the portal's are
    Secure, and this hop is plain HTTP), redirects followed one by one."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**FORWARDED, "Origin": f"https://{self.base.split('://')[1]}"}
        headers.update(kwargs.pop("headers", {}))
        for _ in range(6):
            response = requests.request(
                method,
                self.base + path,
                headers=headers,
                cookies=self.cookies,
                allow_redirects=False,
                timeout=30,
                **kwargs,
            )
            self.cookies.update({c.name: c.value or "" for c in response.cookies})
            if response.status_code not in (301, 302, 303) or method != "GET":
                return response
            location = response.headers["Location"]
            path = (
                "/" + location.split("://", 1)[-1].split("/", 1)[1]
                if "://" in location
                else location
            )
        raise AssertionError(f"too many redirects from {path}")

    def form(self, path: str, data: dict[str, str]) -> requests.Response:
        assert self.request("GET", path).status_code == 200
        return self.request(
            "POST", path, data={"csrfmiddlewaretoken": self.cookies["csrftoken"], **data}
        )


def verification_path(mail_dir: Path) -> str:
    for file in sorted(mail_dir.iterdir()):
        message = email.message_from_bytes(file.read_bytes())
        for part in message.walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found = re.search(r"/accounts/confirm-email/[^/\s\"<]+/", payload.decode())
                if found:
                    return found.group(0)
    raise AssertionError(f"no verification link in {mail_dir}")


def test_the_compose_services_serve_a_user_journey(database: str, tmp_path: Path) -> None:
    redis_server = PrivateRedis(tmp_path, "--maxmemory-policy", "noeviction")
    redis_server.start()
    upstream, stop_upstream = start_in_thread()
    topology: Topology | None = None
    try:
        var = tmp_path / "var"
        (var / "mail").mkdir(parents=True)
        # Production values from .env.example, then this machine's instead of the containers'.
        env = dotenv(ROOT / ".env.example")
        topology = Topology(tmp_path, env)
        portal_url = f"http://127.0.0.1:{topology.ports['portal']}"
        relay_url = f"http://127.0.0.1:{topology.ports['relay']}"
        env.update(
            DEBUG="0",
            DATABASE_URL=database,
            REDIS_URL=redis_server.url,
            CELERY_BROKER_URL=redis_server.url,
            SECRET_KEY="compose-test-secret-key-" + "x" * 40,
            TP_KEY_PEPPER="compose-test-pepper",
            TP_SECRETS_KEYS=generate_key(),
            ALLOWED_HOSTS="127.0.0.1",
            CSRF_TRUSTED_ORIGINS=portal_url.replace("http://", "https://"),
            TP_VAR_DIR=str(var),
            TP_SPOOL_DIR=str(var / "spool"),
            TP_CATALOG_FILE=str(ROOT / "catalog" / "catalog.toml"),
            TP_DEMO_UPSTREAM_URL=upstream,
            TP_RELAY_BASE_URL=f"{relay_url}/v1",
            TP_SITE_URL=portal_url,
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(var / "mail"),
            TP_PORTAL_WORKERS="1",
            TP_RELAY_WORKERS="2",
            TP_WORKER_METRICS_HOST="127.0.0.1",
            TP_WORKER_METRICS_PORT=str(free_port()),
        )
        # The image collects the static files at build time; here, into this run's var/.
        subprocess.run(
            [".venv/bin/python", "manage.py", "collectstatic", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=topology.environment("portal"),
            check=True,
            timeout=120,
        )
        first, *others = APP_SERVICES
        topology.run_once(first)  # the one-shot the others wait for (service_completed_...)
        for name in others:
            topology.start(name)

        def up() -> bool:
            topology.alive()
            return ready(portal_url, FORWARDED) and ready(relay_url)

        wait_until(up, timeout=30, interval=0.2)
        for name in ("portal", "relay", "worker"):
            check = topology.healthcheck(name)
            if name == "worker" and check.returncode:  # the first ping may precede the worker
                check = wait_until(
                    lambda: (c := topology.healthcheck("worker")).returncode == 0 and c, timeout=30
                )
            assert check.returncode == 0, (name, check.stdout, check.stderr)

        # A person signs up, follows the link of the e-mail, and signs in.
        person = Browser(portal_url)
        signup = person.form(
            "/accounts/signup/", {"email": EMAIL, "password1": PASSWORD, "password2": PASSWORD}
        )
        assert signup.status_code == 302, signup.text[:2000]
        link = verification_path(var / "mail")
        assert person.form(link, {}).status_code == 302
        login = person.form("/accounts/login/", {"login": EMAIL, "password": PASSWORD})
        assert login.status_code == 302, login.text[:2000]
        assert person.request("GET", "/dashboard/").status_code == 200

        # The operator credits the account, as `docker compose run --rm portal manage.py credit`.
        subprocess.run(
            shlex.split(f"python manage.py credit {EMAIL} 10"),
            cwd=ROOT,
            env=topology.environment("portal"),
            check=True,
            timeout=60,
            capture_output=True,
        )

        # A key from the keys API (the browser session), then a call through the relay.
        created = person.request(
            "POST",
            "/api/v1/keys/",
            json={"name": "compose smoke"},
            headers={"X-CSRFToken": person.cookies["csrftoken"]},
        )
        assert created.status_code == 201, created.text[:2000]
        client = OpenAI(base_url=f"{relay_url}/v1", api_key=created.json()["secret"])
        answer = client.chat.completions.create(
            model="mistral-large-2", messages=[{"role": "user", "content": "Hello"}]
        )
        assert answer.choices[0].message.content
        assert answer.usage is not None and answer.usage.total_tokens > 0

        # The worker records it: a usage event with a cost, shown on the usage page.
        def recorded() -> Any:
            with psycopg.connect(database) as conn:
                rows = conn.execute("SELECT model_id, cost FROM billing_usageevent").fetchall()
            return rows

        [(model_id, cost)] = wait_until(recorded, timeout=20, interval=0.2)
        assert model_id and cost > 0
        usage = person.request("GET", "/usage/")
        assert usage.status_code == 200 and model_id in usage.text
        topology.alive()
    finally:
        if topology is not None:
            topology.stop()
        stop_upstream()
        redis_server.stop()
