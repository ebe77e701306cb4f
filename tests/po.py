"""A reader of gettext .po files for the translation tests (no dependency): the entries as the
msgctxt, msgid and msgid_plural that identify them, their msgstr forms and their flags."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale"
TRANSLATED = ("fr", "de", "es", "it")


@dataclass
class Entry:
    msgctxt: str | None = None
    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        return (self.msgctxt, self.msgid, self.msgid_plural)

    @property
    def translated(self) -> bool:
        return bool(self.msgstr) and all(self.msgstr.values()) and "fuzzy" not in self.flags


def catalogue(language: str, locale: Path = LOCALE) -> Path:
    return locale / language / "LC_MESSAGES" / "django.po"


def read(path: Path) -> list[Entry]:
    """Every live entry of ``path`` but the header (obsolete ``#~`` entries are comments)."""
    entries: list[Entry] = []
    entry = Entry()
    target: tuple[str, int] | None = None

    def finish() -> None:
        nonlocal entry
        if entry.msgid or entry.msgstr or entry.msgctxt is not None:
            if entry.msgid or entry.msgctxt is not None:
                entries.append(entry)
        entry = Entry()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            finish()
            target = None
        elif line.startswith("#,"):
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            if target is None:
                raise ValueError(f"{path}: a string continues nothing: {raw!r}")
            _append(entry, target, ast.literal_eval(line))
        else:
            keyword, _, value = line.partition(" ")
            text = ast.literal_eval(value)
            if keyword.startswith("msgstr["):
                target = ("msgstr", int(keyword[7:-1]))
            elif keyword in {"msgctxt", "msgid", "msgid_plural", "msgstr"}:
                if keyword in {"msgctxt", "msgid"} and (entry.msgstr or entry.msgid):
                    finish()
                target = (keyword, 0)
            else:
                raise ValueError(f"{path}: unknown line {raw!r}")
            _set(entry, target, text)
    finish()
    return entries


def _set(entry: Entry, target: tuple[str, int], text: str) -> None:
    name, index = target
    if name == "msgstr":
        entry.msgstr[index] = text
    else:
        setattr(entry, name, text)


def _append(entry: Entry, target: tuple[str, int], text: str) -> None:
    name, index = target
    if name == "msgstr":
        entry.msgstr[index] += text
    else:
        setattr(entry, name, (getattr(entry, name) or "") + text)


def untranslated(language: str) -> list[str]:
    """The msgids of ``language``'s catalogue without a translation (or marked fuzzy)."""
    return [e.msgid for e in read(catalogue(language)) if not e.translated]
