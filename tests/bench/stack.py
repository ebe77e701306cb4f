"""Starting, watching and stopping the processes the benchmark measures.

Every process is started in its own session (so its whole group can be ended by its id),
asks the kernel to be sent SIGTERM if the benchmark itself dies, logs to
``var/bench/logs/<name>.log`` and is stopped by :meth:`Procs.stop_all` (SIGTERM to its group,
then SIGKILL after a grace period). Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv" / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_libc: Any = None
with contextlib.suppress(OSError):
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def python() -> str:
    """The project's interpreter (``.venv``), or the one running this script."""
    return str(VENV_PY) if VENV_PY.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log: Path, leader_first: bool = False
    ) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.leader_first = leader_first

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.leader_first:
                # Let a pre-fork server (the Celery worker) shut its children down itself;
                # a SIGTERM to the whole group kills its pool child mid-task.
                os.kill(self.pid, signal.SIGTERM)
            else:
                os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)
        # Whatever of the group outlived its leader (workers of a pre-fork server).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class Procs:
    """The processes this run started; stopped in reverse order of starting."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        cwd: Path = ROOT,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        leader_first: bool = False,
    ) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout if stdout is not None else fh,
                stderr=fh,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log, leader_first)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.started:
            proc = self.started.pop()
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"  could not stop {proc.name} ({proc.pid}): {exc}", file=sys.stderr)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing a non-loopback URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(
    url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0
) -> tuple[int, bytes]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing a non-loopback URL: {url}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(proc: Proc, url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before it was ready; "
                f"log {proc.log}:\n{proc.log_tail()}"
            )
        try:
            status, _ = http_get(url, timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(
        f"{proc.name} not ready at {url} after {timeout:.0f}s ({last}); "
        f"log {proc.log}:\n{proc.log_tail()}"
    )


def run_checked(
    argv: Sequence[str], env: dict[str, str], *, timeout: float = 600, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# ---- /proc readings ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """utime + stime of ``pid`` (and of its live descendants) in seconds."""
    total = 0
    for p in tree(pid) if with_children else [pid]:
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def rss_bytes(pid: int, *, with_children: bool = False) -> int:
    total = 0
    for p in tree(pid) if with_children else [pid]:
        try:
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += pages * PAGE
    return total


def postgres_cpu() -> float | None:
    """CPU seconds of the whole local PostgreSQL server: every ``postgres`` process plus what
    the postmaster has collected from backends that already exited (a worker that connects
    per batch leaves short-lived backends). Shared with whatever else uses the server."""
    procs: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        if comm in ("postgres", "postmaster"):
            procs[int(entry)] = raw[raw.rindex(")") + 2 :].split()
    if not procs:
        return None
    ticks = 0
    for fields in procs.values():
        ticks += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in procs:  # the postmaster: add its reaped children
            ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ---- throwaway environments ----------------------------------------------------------------------


def ensure_venv(
    venv: Path, packages: Sequence[str], log: Path, say: Callable[[str], None], timeout: float
) -> tuple[bool, str]:
    """A virtualenv under var/bench with ``packages`` pip-installed once (stamp file)."""
    stamp = venv / ".bench-installed"
    wanted = "\n".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return True, "already installed"
    log.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    say(f"installing {' '.join(packages)} into {venv.relative_to(ROOT)} (first use; see {log})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    with open(log, "ab") as fh:
        if not (venv / "bin" / "python").exists():
            done = subprocess.run(
                [base, "-m", "venv", str(venv)], stdout=fh, stderr=fh, env=env, check=False
            )
            if done.returncode != 0:
                return False, f"could not create {venv} (exit {done.returncode})"
        try:
            done = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", *packages],
                stdout=fh,
                stderr=fh,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"pip install timed out after {timeout:.0f}s"
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        return False, f"pip install failed (exit {done.returncode}):\n{tail}"
    stamp.write_text(wanted)
    return True, "installed"


def ensure_target_dir(
    target: Path, package: str, log: Path, say: Callable[[str], None], timeout: float
) -> tuple[bool, str]:
    """``pip install --target`` (no deps) with the project's pip, for PYTHONPATH use only:
    the project's environment itself is left as it is."""
    stamp = target / ".bench-installed"
    if stamp.exists():
        return True, "already installed"
    say(f"installing {package} into {target.relative_to(ROOT)} (first use; see {log})")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        try:
            done = subprocess.run(
                [
                    python(),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--target",
                    str(target),
                    package,
                ],
                stdout=fh,
                stderr=fh,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"pip install timed out after {timeout:.0f}s"
    if done.returncode != 0:
        return False, f"pip install {package} failed (exit {done.returncode}); see {log}"
    stamp.write_text(package)
    return True, "installed"


def ensure_npm_dir(
    folder: Path,
    spec: str,
    overrides: dict[str, str],
    log: Path,
    say: Callable[[str], None],
    timeout: float,
) -> tuple[bool, str]:
    """``npm install --no-audit --no-fund <spec>`` into ``folder`` once (stamp file), with
    ``overrides`` (transitive dependency pins) written to its package.json first. Uses the
    machine's npm and its registry; nothing outside ``folder`` is touched."""
    npm = shutil.which("npm")
    if npm is None:
        return False, "npm is not installed on this machine"
    stamp = folder / ".bench-installed"
    wanted = json.dumps({"spec": spec, "overrides": overrides}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return True, "already installed"
    say(f"installing {spec} into {folder.relative_to(ROOT)} with npm (first use; see {log})")
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    for stale in ("node_modules", "package-lock.json"):
        path = folder / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    manifest = {
        "name": "tokenpapa-bench-" + folder.name,
        "private": True,
        "description": "Throwaway install made by tests/bench/run.py",
        "overrides": overrides,
    }
    (folder / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    env = dict(os.environ)
    env.update({"npm_config_update_notifier": "false", "npm_config_fund": "false"})
    with open(log, "ab") as fh:
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--save-exact", spec],
                cwd=folder,
                stdout=fh,
                stderr=fh,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"npm install timed out after {timeout:.0f}s"
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        return False, f"npm install failed (exit {done.returncode}):\n{tail}"
    stamp.write_text(wanted)
    return True, "installed"


def npm_package_version(folder: Path, package: str) -> str | None:
    """The version of ``package`` installed under ``folder/node_modules`` (None if absent)."""
    try:
        manifest = json.loads((folder / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return str(version) if version else None
