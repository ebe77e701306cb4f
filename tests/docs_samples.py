"""Runs the code samples of the user docs (docs/site/<lang>/<slug>.md), so they cannot rot.

The conventions (docs/site/README.md tells the writers):

- every fenced block whose info string's first word is ``python``, ``bash`` or ``javascript``
  is a sample, run alone in a fresh subprocess (cwd a temporary directory, with a timeout),
  unless its info string contains ``no-run``;
- ``{{ base_url }}``, ``{{ relay_root }}`` and ``{{ portal_url }}`` are replaced by the test
  stack's relay (with and without ``/v1``) and portal;
- a ``text output`` block right after a sample (blank lines between at most) is its expected
  stdout, compared doctest-style: ``...`` inside a line matches anything on that line, a line of
  just ``...`` matches any number of lines; without one, exit status 0 is all that is checked.
  A ``text output`` block that follows no sample is an error, so an output cannot go stale
  silently.

JavaScript samples would need node and the ``openai`` npm package on a fresh clone; the project
does not vendor it, so a javascript sample fails with that explanation rather than being skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "site"
LANGUAGES = ("python", "bash", "javascript")
OUTPUT_INFO = "text output"
TIMEOUT = 30.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Block:
    info: str
    line: int  # of the opening fence, 1-based
    code: str


@dataclass(frozen=True)
class Sample:
    page: str  # "<lang>/<slug>"
    line: int
    language: str  # "python", "bash", "javascript", or "orphan-output"
    code: str
    expected: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(text: str) -> list[tuple[Block, int]]:
    """Each fenced block with the line number where it ends (front matter skipped)."""
    lines = text.splitlines()
    start = 0
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                start = i + 1
                break
    out: list[tuple[Block, int]] = []
    i = start
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        out.append((Block(match["info"].strip(), i + 1, "\n".join(body) + "\n"), j + 1))
        i = j + 1
    return out


def page_samples(path: Path, site: Path = SITE) -> list[Sample]:
    """The samples of one page, each with the ``text output`` block that follows it."""
    page = path.relative_to(site).with_suffix("").as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    samples: list[Sample] = []
    previous: tuple[Block, int] | None = None
    for block, end in fenced_blocks(path.read_text(encoding="utf-8")):
        words = block.info.split()
        if block.info == OUTPUT_INFO:
            gap = lines[previous[1] : block.line - 1] if previous else ["(start of page)"]
            last = samples[-1] if samples else None
            follows = (
                previous is not None
                and last is not None
                and last.line == previous[0].line
                and last.expected is None
                and all(not g.strip() for g in gap)
            )
            if follows and last is not None:
                samples[-1] = Sample(last.page, last.line, last.language, last.code, block.code)
            else:
                samples.append(Sample(page, block.line, "orphan-output", "", block.code))
        elif words and words[0] in LANGUAGES and "no-run" not in words:
            samples.append(Sample(page, block.line, words[0], block.code, None))
        previous = (block, end)
    return samples


def site_samples(site: Path = SITE) -> list[Sample]:
    return [s for path in sorted(site.glob("*/*.md")) for s in page_samples(path, site)]


def substitute(code: str, values: dict[str, str]) -> str:
    """Replace ``{{ name }}`` placeholders; an unknown one is an error, not left in place."""

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise KeyError(f"unknown placeholder {{{{ {name} }}}}")
        return values[name]

    return _PLACEHOLDER.sub(one, code)


def output_matches(expected: str, actual: str) -> bool:
    """Doctest-style comparison (see the module docstring); trailing blanks are ignored."""
    pattern = []
    for line in expected.rstrip().splitlines():
        line = line.rstrip()
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*".join(re.escape(part) for part in line.split("...")) + r"[ \t]*\n")
    text = "\n".join(line.rstrip() for line in actual.rstrip().splitlines()) + "\n"
    return re.fullmatch("".join(pattern), text) is not None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    report: str


def _command(sample: Sample, workdir: Path) -> list[str]:
    if sample.language == "python":
        script = workdir / "sample.py"
        script.write_text(sample.code, encoding="utf-8")
        return [sys.executable, str(script)]
    script = workdir / "sample.sh"
    script.write_text(sample.code, encoding="utf-8")
    return ["bash", "-e", "-o", "pipefail", str(script)]


def run_sample(
    sample: Sample, values: dict[str, str], env: dict[str, str], workdir: Path
) -> Outcome:
    """Runs one sample and checks it; the report names the page and line and shows output."""
    where = f"docs/site/{sample.page}.md, line {sample.line}"
    if sample.language == "orphan-output":
        return Outcome(False, f"{where}: a `text output` block that follows no sample")
    if sample.language == "javascript":
        return Outcome(
            False,
            f"{where}: javascript samples cannot run in CI (the `openai` npm package is not "
            "installed on a fresh clone); mark the block `javascript no-run` or write it in "
            "Python or bash",
        )
    try:
        code = substitute(sample.code, values)
    except KeyError as exc:
        return Outcome(False, f"{where}: {exc.args[0]}")
    sample = Sample(sample.page, sample.line, sample.language, code, sample.expected)
    try:
        done = subprocess.run(
            _command(sample, workdir),
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(False, f"{where}: timed out after {TIMEOUT:.0f} s\n{exc.stdout or ''}")
    shown = f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}"
    if done.returncode != 0:
        return Outcome(False, f"{where}: exit status {done.returncode}\n{shown}")
    if sample.expected is not None and not output_matches(sample.expected, done.stdout):
        return Outcome(
            False, f"{where}: output differs\n--- expected ---\n{sample.expected}{shown}"
        )
    return Outcome(True, "")
