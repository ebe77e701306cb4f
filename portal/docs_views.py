"""The docs pages, their search, their raw Markdown and the llms.txt files built from them."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import get_language
from django.views.decorators.http import require_safe

from . import docs

_MARKDOWN = "text/markdown; charset=utf-8"
_PLAIN = "text/plain; charset=utf-8"
# Pages listed under "Optional" in llms.txt: context an agent can skip.
_OPTIONAL = frozenset({"faq", "changelog", "self-hosting"})


def _urls(request: HttpRequest) -> dict[str, str]:
    return docs.deployment_urls(request.build_absolute_uri("/"))


def _lang() -> str:
    return docs.language_of(get_language())


def _page(slug: str, lang: str) -> docs.Page:
    try:
        return docs.page(slug, lang)
    except docs.PageNotFound:
        raise Http404(slug) from None


@require_safe
def page(request: HttpRequest, slug: str = "index") -> HttpResponse:
    if slug == "index" and request.resolver_match and request.resolver_match.url_name != "docs":
        return redirect("docs")
    lang = _lang()
    found = _page(slug, lang)
    nav = docs.navigation(lang)
    at = [p.slug for p in nav].index(found.slug) if found.slug in [p.slug for p in nav] else -1
    context = {
        "nav": "docs",
        "page": found,
        "body": found.html_for(_urls(request)),
        "pages": nav,
        "fallback": found.lang != lang,
        "previous": nav[at - 1] if at > 0 else None,
        "next": nav[at + 1] if 0 <= at < len(nav) - 1 else None,
        "markdown_url": reverse("docs_markdown", args=[found.slug]),
    }
    return render(request, "docs/page.html", context)


@require_safe
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:200]
    lang = _lang()
    hits = docs.search(query, lang, _urls(request)) if query.strip() else []
    context = {"nav": "docs", "query": query, "hits": hits, "pages": docs.navigation(lang)}
    return render(request, "docs/search.html", context)


@require_safe
def page_markdown(request: HttpRequest, slug: str) -> HttpResponse:
    found = _page(slug, _lang())
    return HttpResponse(found.markdown_text(_urls(request)), content_type=_MARKDOWN)


@require_safe
def llms_txt(request: HttpRequest) -> HttpResponse:
    """The llmstxt.org index: a title, a summary, and a link to every page's Markdown."""
    urls = _urls(request)
    portal = urls["portal_url"]
    index = docs.page("index", docs.DEFAULT_LANGUAGE)
    pages = docs.navigation(docs.DEFAULT_LANGUAGE)
    lines = [
        "# TokenPapa",
        "",
        f"> {index.description}",
        "",
        f"The relay's OpenAI base URL is {urls['base_url']}; the Anthropic Messages API is at "
        f"{urls['relay_root']}/v1/messages. Keys (tp-sk-…) come from {portal}/keys/.",
        "",
        "## Docs",
        "",
    ]

    def link(p: docs.Page) -> str:
        return f"- [{p.title}]({portal}{reverse('docs_markdown', args=[p.slug])}): {p.description}"

    lines += [link(p) for p in pages if p.slug not in _OPTIONAL]
    lines += ["", "## Optional", ""]
    lines += [link(p) for p in pages if p.slug in _OPTIONAL]
    return HttpResponse("\n".join(lines) + "\n", content_type=_PLAIN)


@require_safe
def llms_full_txt(request: HttpRequest) -> HttpResponse:
    urls = _urls(request)
    pages = docs.navigation(docs.DEFAULT_LANGUAGE)
    text = "\n\n".join(p.markdown_text(urls) for p in pages)
    return HttpResponse(text, content_type=_PLAIN)
