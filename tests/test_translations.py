"""The translation check (part of `make test`): the committed catalogues hold exactly the
messages the code marks (none missing, none stale), every one translated in every language with
its placeholders intact, and the compiled .mo files are the .po files' current compilation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .po import LOCALE, ROOT, TRANSLATED, catalogue, read

MSGFMT = shutil.which("msgfmt")
needs_msgfmt = pytest.mark.skipif(
    MSGFMT is None, reason="gettext's msgfmt is missing: `make gettext` installs it"
)


@needs_msgfmt
def test_the_catalogues_hold_exactly_the_marked_messages(tmp_path: Path) -> None:
    """bin/messages (what `make messages` runs) extracted into a copy of locale/ gives the
    same messages as the committed .po files: a newly marked string, or one no longer used,
    fails here until `make messages` is run and the result committed."""
    extracted = tmp_path / "locale"
    shutil.copytree(LOCALE, extracted, ignore=shutil.ignore_patterns("*.mo"))
    subprocess.run(
        [sys.executable, str(ROOT / "bin" / "messages"), "--locale-dir", str(extracted), "-v", "0"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    problems = []
    for language in TRANSLATED:
        committed = {e.key for e in read(catalogue(language))}
        current = {e.key for e in read(catalogue(language, extracted))}
        for key in sorted(current - committed, key=str):
            problems.append(f"{language}: not in the catalogue (run `make messages`): {key[1]!r}")
        for key in sorted(committed - current, key=str):
            problems.append(f"{language}: no longer in the code (run `make messages`): {key[1]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated(language: str) -> None:
    missing = [
        f"{e.msgid!r}" + (" (fuzzy)" if "fuzzy" in e.flags else "")
        for e in read(catalogue(language))
        if not e.translated
    ]
    assert not missing, f"{len(missing)} untranslated in {language}:\n" + "\n".join(missing)


@needs_msgfmt
@pytest.mark.parametrize("language", TRANSLATED)
def test_the_translations_keep_their_placeholders(language: str) -> None:
    """msgfmt --check-format compares each python-format / python-brace-format translation's
    placeholders with its msgid's."""
    done = subprocess.run(
        [str(MSGFMT), "--check-format", "-o", "/dev/null", str(catalogue(language))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@needs_msgfmt
@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_is_current(language: str, tmp_path: Path) -> None:
    """The .mo the portal loads is what the .po compiles to now (`make messages-compiled`,
    which `make test` and `make run` do first)."""
    po = catalogue(language)
    compiled = po.with_suffix(".mo")
    assert compiled.exists(), f"{compiled} is missing: run `make messages-compiled`"
    fresh = tmp_path / "django.mo"
    subprocess.run([str(MSGFMT), "--check-format", "-o", str(fresh), str(po)], check=True)
    assert fresh.read_bytes() == compiled.read_bytes(), (
        f"{compiled} is older than its .po: run `make messages-compiled`"
    )


# xgettext finds a message only behind the names it knows (gettext, gettext_lazy, ngettext, _,
# …): a string marked through another alias is never extracted, so it would stay English while
# every check above passes.
ALIAS = re.compile(r"import\s+(?:n|p|np)?gettext(?:_lazy|_noop)?\s+as\s+(?!_\b)(\w+)")


def test_no_message_is_marked_under_a_name_xgettext_does_not_know() -> None:
    aliased = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for package in ("accounts", "billing", "catalog", "keys", "lib", "portal")
        for path in sorted((ROOT / package).rglob("*.py"))
        for match in ALIAS.finditer(path.read_text(encoding="utf-8"))
    ]
    assert aliased == []
