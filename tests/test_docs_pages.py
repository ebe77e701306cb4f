"""The user docs: Markdown pages under docs/site/ rendered by the portal, with navigation,
permalinks, search, this deployment's URLs in every sample, the raw Markdown, llms.txt and the
English fallback for a page not yet translated."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from playwright.sync_api import Page, expect

from portal import docs

RELAY = "https://relay.example.test/v1"
PORTAL = "http://testserver"
SITE = Path(settings.BASE_DIR) / "docs" / "site" / "en"


def _front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), path
    meta = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(meta, dict)
    return meta


PAGES = sorted(
    ((path.stem, _front_matter(path)) for path in SITE.glob("*.md")),
    key=lambda item: int(item[1]["order"]),
)
SLUGS = [slug for slug, _ in PAGES]


def _url(slug: str) -> str:
    return reverse("docs") if slug == "index" else reverse("docs_page", args=[slug])


@pytest.fixture
def reader(settings: Any, transactional_db: None) -> Client:
    """An anonymous visitor reading in English, on a deployment whose relay is RELAY."""
    settings.TP_RELAY_BASE_URL = RELAY
    return Client(headers={"accept-language": "en"})


def test_the_docs_cover_every_promised_page() -> None:
    promised = {
        "index", "quickstart", "authentication-and-keys", "models", "chat-completions",
        "streaming", "tools", "json-mode", "embeddings", "anthropic", "errors", "limits",
        "billing", "management-api", "privacy", "self-hosting", "faq", "changelog",
    }  # fmt: skip
    assert promised <= set(SLUGS)
    for slug, meta in PAGES:
        assert meta["title"] and meta["description"], slug
        assert "\n" not in str(meta["description"]).strip(), slug
    orders = [int(meta["order"]) for _, meta in PAGES]
    assert len(set(orders)) == len(orders), "two pages share an order"


@pytest.mark.parametrize(("slug", "meta"), PAGES, ids=SLUGS)
def test_each_page_renders_with_its_title_nav_and_no_template_left(
    reader: Client, slug: str, meta: dict[str, Any]
) -> None:
    response = reader.get(_url(slug))
    assert response.status_code == 200
    body = response.content.decode()
    title = re.search(r'<h1 class="page-title">(.*?)</h1>', body)
    assert title and title.group(1) == escape(meta["title"])
    assert f'<meta name="description" content="{escape(meta["description"])}">' in body
    # The sidebar lists every page, in page order, and marks this one.
    nav = body.split('class="docs-nav"')[1].split("</nav>")[0]
    hrefs = re.findall(r'href="([^"]+)"', nav)
    assert hrefs == [_url(s) for s in SLUGS]
    assert f'href="{_url(slug)}" aria-current="page"' in nav
    # Placeholders are replaced, Markdown is rendered, nothing is left for a template engine.
    assert "{{" not in body
    assert "tpdocsvar" not in body
    assert "This page is in English" not in body


def test_headings_get_permalink_anchors(reader: Client) -> None:
    body = reader.get(_url("errors")).content.decode()
    assert '<h2 id="every-code">' in body
    assert '<a class="headerlink" href="#every-code">' in body
    streaming = reader.get(_url("streaming")).content.decode()
    assert '<h2 id="how-streams-are-billed">' in streaming


def test_samples_carry_this_deployments_urls(reader: Client) -> None:
    quickstart = reader.get(_url("quickstart")).content.decode()
    assert RELAY in quickstart
    assert f"{RELAY}/chat/completions" in quickstart
    assert f"{PORTAL}/keys/" in quickstart
    # Highlighted by Pygments on the server, the URL inside the string literal intact.
    assert '<div class="highlight">' in quickstart
    assert f'<span class="s2">"{RELAY}"</span>' in quickstart
    anthropic = reader.get(_url("anthropic")).content.decode()
    assert '<span class="s2">"https://relay.example.test"</span>' in anthropic
    assert "ANTHROPIC_BASE_URL" in anthropic


def test_code_blocks_get_copy_buttons_from_a_static_script(reader: Client) -> None:
    body = reader.get(_url("quickstart")).content.decode()
    assert re.search(r'<script src="/static/js/docs\.js" defer></script>', body)
    assert 'data-copy-label="Copy"' in body and 'data-copied-label="Copied"' in body
    assert "<script>" not in body  # the CSP forbids inline scripts
    script = (Path(settings.BASE_DIR) / "static" / "js" / "docs.js").read_text()
    assert "data-copy-target" in script  # app.js's delegated copy handler does the copying
    # An expected output block is marked so that it gets no copy button.
    assert '<div class="output highlight">' in body


def test_search_finds_a_term_from_a_pages_body(reader: Client) -> None:
    response = reader.get(reverse("docs_search"), {"q": "spend_cap_reached"})
    assert response.status_code == 200
    body = response.content.decode()
    results = body.split('class="docs-results"')[1].split("</ol>")[0]
    assert f'href="{_url("errors")}#every-code"' in results
    assert "Errors" in results
    assert "spend_cap_reached" in results  # the snippet around the match
    # Several words must all appear; the title of the page counts.
    both = reader.get(reverse("docs_search"), {"q": "claude code ANTHROPIC_AUTH_TOKEN"})
    assert f'href="{_url("anthropic")}#claude-code"' in both.content.decode()


def test_search_without_a_match_or_a_query_says_so(reader: Client) -> None:
    nothing = reader.get(reverse("docs_search"), {"q": "xylophone-quartz"}).content.decode()
    assert "Nothing in the docs matches" in nothing
    empty = reader.get(reverse("docs_search")).content.decode()
    assert "Type a word or two" in empty


def test_search_results_show_the_deployments_urls(reader: Client) -> None:
    body = reader.get(reverse("docs_search"), {"q": "Claude Code"}).content.decode()
    assert "tpdocsvar" not in body
    assert "{{" not in body


def test_an_unknown_page_is_a_404(reader: Client) -> None:
    assert reader.get("/docs/no-such-page/").status_code == 404
    assert reader.get("/docs/no-such-page.md").status_code == 404


def test_the_index_has_one_address(reader: Client) -> None:
    response = reader.get("/docs/index/")
    assert response.status_code == 302
    assert response["Location"] == reverse("docs")


def test_each_page_is_served_as_markdown_with_urls_substituted(reader: Client) -> None:
    response = reader.get(reverse("docs_markdown", args=["quickstart"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("# Quickstart\n\n> ")
    assert f'OpenAI(base_url="{RELAY}"' in text
    assert "{{" not in text
    assert "```python\n" in text  # the source as written, not HTML


def test_llms_txt_links_every_pages_markdown(reader: Client) -> None:
    response = reader.get("/llms.txt")
    assert response.status_code == 200
    text = response.content.decode()
    lines = text.splitlines()
    assert lines[0] == "# TokenPapa"
    assert lines[2].startswith("> ")
    assert "## Docs" in lines and "## Optional" in lines
    for slug, meta in PAGES:
        assert f"- [{meta['title']}]({PORTAL}/docs/{slug}.md): {meta['description']}" in text
    assert RELAY in text


def test_llms_full_txt_holds_every_page(reader: Client) -> None:
    response = reader.get("/llms-full.txt")
    assert response.status_code == 200
    text = response.content.decode()
    for _, meta in PAGES:
        assert f"# {meta['title']}\n" in text
    assert "{{" not in text
    assert f"{RELAY}/chat/completions" in text
    assert f"{PORTAL}/keys/" in text


def test_a_page_not_yet_translated_is_shown_in_english_with_a_notice(
    reader: Client, settings: Any, tmp_path: Path
) -> None:
    root = tmp_path / "docs" / "site"
    (root / "en").mkdir(parents=True)
    (root / "fr").mkdir()
    for slug in ("index", "quickstart", "errors"):
        (root / "en" / f"{slug}.md").write_bytes((SITE / f"{slug}.md").read_bytes())
    (root / "fr" / "quickstart.md").write_text(
        "---\ntitle: Démarrage rapide\norder: 1\ndescription: En trois minutes.\n---\n\n"
        "## Votre premier appel\n\n```bash\ncurl {{ base_url }}/models\n```\n",
        encoding="utf-8",
    )
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True  # the file listing is read again
    french = Client(headers={"accept-language": "fr"})

    translated = french.get(_url("quickstart")).content.decode()
    assert '<h1 class="page-title">Démarrage rapide</h1>' in translated
    assert f'curl<span class="w"> </span>{RELAY}/models' in translated
    assert "docs-fallback" not in translated
    # The sidebar shows the translated title where there is one.
    assert ">Démarrage rapide</a>" in translated

    fallback = french.get(_url("errors"))
    assert fallback.status_code == 200
    body = fallback.content.decode()
    assert "docs-fallback" in body
    assert '<div class="docs-body" lang="en"' in body
    assert '<h1 class="page-title">Errors</h1>' in body


def test_a_changed_page_is_rendered_again_in_debug(
    reader: Client, settings: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "docs" / "site" / "en"
    folder.mkdir(parents=True)
    page = folder / "index.md"
    page.write_text("---\ntitle: One\norder: 0\ndescription: d\n---\n\nfirst\n", encoding="utf-8")
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    assert "first" in reader.get(_url("index")).content.decode()
    page.write_text("---\ntitle: Two\norder: 0\ndescription: d\n---\n\nsecond\n", encoding="utf-8")
    stat = page.stat()
    os.utime(page, (stat.st_atime, stat.st_mtime + 5))
    body = reader.get(_url("index")).content.decode()
    assert "second" in body and '<h1 class="page-title">Two</h1>' in body


def test_front_matter_is_required(tmp_path: Path) -> None:
    broken = tmp_path / "broken.md"
    broken.write_text("# No front matter\n", encoding="utf-8")
    with pytest.raises(ValueError, match="front matter"):
        docs.parse(broken, "en")


def test_a_reader_copies_a_sample_and_searches_in_the_browser(
    page: Page, live_server: Any, settings: Any
) -> None:
    settings.TP_RELAY_BASE_URL = RELAY
    refused: list[str] = []
    page.on(
        "console", lambda msg: refused.append(msg.text) if "Content Security" in msg.text else None
    )
    page.goto(f"{live_server.url}/docs/quickstart/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Quickstart")

    sample = page.locator(".docs-body div.highlight").filter(has_text="OpenAI(base_url=")
    expect(sample).to_contain_text(f'"{RELAY}"')
    copy = sample.locator("button.docs-copy")
    expect(copy).to_have_text("Copy")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy.click()
    expect(copy).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f'OpenAI(base_url="{RELAY}"' in copied
    assert not copied.startswith("Copy")  # the code alone, not the button's label
    # The expected output below a sample is not something to copy.
    expect(page.locator(".docs-body div.highlight.output button")).to_have_count(0)

    page.get_by_placeholder("Search the docs").fill("insufficient_quota")
    page.get_by_placeholder("Search the docs").press("Enter")
    page.get_by_role("link", name=re.compile(r"^Errors › Every code")).click()
    expect(page).to_have_url(re.compile(r"/docs/errors/#every-code$"))
    assert refused == []


def test_the_docs_are_read_only(reader: Client) -> None:
    for url in (_url("index"), _url("errors"), "/docs/errors.md", "/llms.txt", "/docs/search/"):
        assert reader.post(url).status_code == 405, url
        assert reader.head(url).status_code == 200, url
