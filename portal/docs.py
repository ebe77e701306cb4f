"""The user docs: Markdown pages under docs/site/<lang>/<slug>.md, rendered once per process.

Each page starts with YAML front matter (``title``, ``order``, ``description``) between ``---``
lines. Three placeholders, ``{{ base_url }}``, ``{{ relay_root }}`` and ``{{ portal_url }}``, are
replaced by this deployment's URLs when a page is served; nothing else in a page is a template.
Rendering turns each placeholder into an inert word first (so neither Markdown nor Pygments can
split it), and the served HTML swaps those words for the escaped URLs.

Pages are cached for the life of the process; with DEBUG on, a page whose file changed is
rendered again. docs/site/README.md describes the conventions for writers.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import yaml
from django.conf import settings

DEFAULT_LANGUAGE = "en"
PLACEHOLDERS = ("base_url", "relay_root", "portal_url")

_PLACEHOLDER = re.compile(r"\{\{\s*(" + "|".join(PLACEHOLDERS) + r")\s*\}\}")
_TOKEN = "tpdocsvar{}x"  # noqa: S105 - a placeholder marker in the docs, not a secret
_TOKENS = {name: _TOKEN.format(name.replace("_", "")) for name in PLACEHOLDERS}
_TOKEN_RE = re.compile("|".join(_TOKENS.values()))
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
# An opening fence with an info string of words ("python no-run", "text output") becomes the
# attribute form Python-Markdown reads ("{ .python .no-run }"): the first word is the language.
_FENCE_INFO = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<words>[A-Za-z][\w+-]*(?:[ \t]+[\w-]+)*)[ \t]*$"
)
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})")
_SECTION = re.compile(r'<h([23]) id="([^"]+)">(.*?)</h\1>', re.DOTALL)
_BLOCK_END = re.compile(r"</(?:p|li|td|th|tr|pre|div|h[1-6]|blockquote)>|<br\s*/?>")
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_SNIPPET = 160


class PageNotFound(Exception):
    pass


@dataclass(frozen=True)
class Section:
    anchor: str
    heading: str
    text: str


@dataclass(frozen=True)
class Page:
    slug: str
    lang: str
    title: str
    order: int
    description: str
    body: str  # the Markdown after the front matter, placeholders as written
    html: str  # rendered, placeholders as inert tokens
    sections: tuple[Section, ...] = field(default=())

    def markdown_text(self, urls: dict[str, str]) -> str:
        """The page as standalone Markdown (for /docs/<slug>.md and llms-full.txt)."""
        text = f"# {self.title}\n\n> {self.description}\n\n{self.body.strip()}\n"
        return substitute_markdown(text, urls)

    def html_for(self, urls: dict[str, str]) -> str:
        return substitute_html(self.html, urls)


@dataclass(frozen=True)
class SearchHit:
    page: Page
    anchor: str
    heading: str
    snippet: str


def site_root() -> Path:
    return Path(settings.BASE_DIR) / "docs" / "site"


def deployment_urls(portal_origin: str) -> dict[str, str]:
    base = settings.TP_RELAY_BASE_URL.rstrip("/")
    return {
        "base_url": base,
        "relay_root": base.removesuffix("/v1"),
        "portal_url": portal_origin.rstrip("/"),
    }


def substitute_markdown(text: str, urls: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: urls[m.group(1)], text)


def substitute_html(text: str, urls: dict[str, str]) -> str:
    by_token = {token: html.escape(urls[name]) for name, token in _TOKENS.items()}
    return _TOKEN_RE.sub(lambda m: by_token[m.group(0)], text)


def substitute_plain(text: str, urls: dict[str, str]) -> str:
    by_token = {token: urls[name] for name, token in _TOKENS.items()}
    return _TOKEN_RE.sub(lambda m: by_token[m.group(0)], text)


def _plain(fragment: str) -> str:
    text = _TAG.sub("", _BLOCK_END.sub(" ", fragment))
    return _SPACE.sub(" ", html.unescape(text)).strip()


def _fences_to_attributes(body: str) -> str:
    lines = []
    inside: str | None = None
    for line in body.split("\n"):
        if inside is None:
            match = _FENCE_INFO.match(line)
            if match:
                inside = match.group("fence")
                classes = " ".join("." + word for word in match.group("words").split())
                line = f"{inside} {{ {classes} }}"
            else:
                bare = _FENCE_OPEN.match(line)
                inside = bare.group(1) if bare else None
        elif line.strip() == inside:
            inside = None
        lines.append(line)
    return "\n".join(lines)


def _render(body: str) -> str:
    converter = markdown.Markdown(
        extensions=["fenced_code", "codehilite", "toc", "tables", "attr_list"],
        extension_configs={
            "codehilite": {"css_class": "highlight", "guess_lang": False},
            "toc": {"permalink": "#", "permalink_title": "", "toc_depth": "2-3"},
        },
        output_format="html",
    )
    tokenised = _PLACEHOLDER.sub(lambda m: _TOKENS[m.group(1)], _fences_to_attributes(body))
    return converter.convert(tokenised)


def _sections(title: str, rendered: str) -> tuple[Section, ...]:
    sections = []
    starts = list(_SECTION.finditer(rendered))
    intro_end = starts[0].start() if starts else len(rendered)
    sections.append(Section("", title, _plain(rendered[:intro_end])))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(rendered)
        heading = _plain(match.group(3)).removesuffix("#").strip()
        sections.append(Section(match.group(2), heading, _plain(rendered[match.end() : end])))
    return tuple(sections)


def parse(path: Path, lang: str) -> Page:
    source = path.read_text(encoding="utf-8")
    match = _FRONT_MATTER.match(source)
    if not match:
        raise ValueError(f"{path}: no front matter")
    meta = yaml.safe_load(match.group(1))
    if not isinstance(meta, dict) or not {"title", "order", "description"} <= meta.keys():
        raise ValueError(f"{path}: front matter needs title, order and description")
    body = source[match.end() :]
    rendered = _render(body)
    title = str(meta["title"])
    return Page(
        slug=path.stem,
        lang=lang,
        title=title,
        order=int(meta["order"]),
        description=str(meta["description"]).strip(),
        body=body,
        html=rendered,
        sections=_sections(title, rendered),
    )


class _Library:
    """Every page of every language, parsed once (again on a file change when DEBUG is on).
    Keyed by path, so a different docs root (in tests) never serves another root's pages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[Path, tuple[float, Page]] = {}
        self._listed: dict[Path, frozenset[str]] = {}

    def slugs(self, lang: str) -> frozenset[str]:
        folder = site_root() / lang
        if settings.DEBUG or folder not in self._listed:
            found = (
                frozenset(p.stem for p in folder.glob("*.md")) if folder.is_dir() else frozenset()
            )
            self._listed[folder] = found
        return self._listed[folder]

    def get(self, lang: str, slug: str) -> Page | None:
        if slug not in self.slugs(lang):
            return None
        path = site_root() / lang / f"{slug}.md"
        cached = self._pages.get(path)
        if cached is not None and not settings.DEBUG:
            return cached[1]
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with self._lock:
            page = parse(path, lang)
            self._pages[path] = (mtime, page)
        return page

    def pages(self, lang: str) -> list[Page]:
        found = [self.get(lang, slug) for slug in self.slugs(lang)]
        return sorted((p for p in found if p is not None), key=lambda p: (p.order, p.slug))


library = _Library()


def language_of(code: str | None) -> str:
    return (code or DEFAULT_LANGUAGE).split("-")[0].lower()


def page(slug: str, lang: str) -> Page:
    """The page in ``lang``, else in English (its ``lang`` says which one was found)."""
    found = library.get(language_of(lang), slug) or library.get(DEFAULT_LANGUAGE, slug)
    if found is None:
        raise PageNotFound(slug)
    return found


def navigation(lang: str) -> list[Page]:
    """The English pages in order, each replaced by its translation where there is one."""
    code = language_of(lang)
    return [library.get(code, p.slug) or p for p in library.pages(DEFAULT_LANGUAGE)]


def _terms(query: str) -> list[str]:
    return [t for t in _SPACE.split(query.strip().lower()) if t][:8]


def _snippet(text: str, term: str) -> str:
    at = text.lower().find(term)
    start = max(0, at - _SNIPPET // 2)
    end = min(len(text), start + _SNIPPET)
    snippet = text[start:end].strip()
    return ("…" if start > 0 else "") + snippet + ("…" if end < len(text) else "")


def search(query: str, lang: str, urls: dict[str, str], limit: int = 20) -> list[SearchHit]:
    """Sections holding every word of ``query`` (case-insensitive), best first: a match in a
    page title or heading ranks above one in the body only."""
    terms = _terms(query)
    if not terms:
        return []
    scored: list[tuple[int, int, SearchHit]] = []
    for rank, found in enumerate(navigation(lang)):
        for section in found.sections:
            text = substitute_plain(section.text, urls)
            haystack = f"{found.title} {section.heading} {text}".lower()
            if not all(term in haystack for term in terms):
                continue
            titled = f"{found.title} {section.heading}".lower()
            score = sum(3 for term in terms if term in titled) + sum(
                text.lower().count(term) for term in terms
            )
            in_body = next((t for t in terms if t in text.lower()), None)
            snippet = _snippet(text, in_body) if in_body else text[:_SNIPPET]
            hit = SearchHit(found, section.anchor, html.unescape(section.heading), snippet)
            scored.append((-score, rank, hit))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [hit for _, _, hit in scored[:limit]]
