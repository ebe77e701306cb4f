"""lib.htmx: the part of a page for htmx's swap of it, the whole page otherwise."""

from __future__ import annotations

from django.test import RequestFactory

from lib import htmx

# Any template that renders without context: which one is chosen is the test above.
TEMPLATE = "catalog/partials/cost.html"


def test_htmx_asks_for_the_part_and_a_history_restore_for_the_page() -> None:
    factory = RequestFactory()
    swap = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "log-results"}
    assert htmx.wants_part(factory.get("/", **swap), "log-results")
    assert not htmx.wants_part(factory.get("/", **swap), "other")
    assert not htmx.wants_part(factory.get("/"), "log-results")
    restore = {**swap, "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}
    assert not htmx.wants_part(factory.get("/", **restore), "log-results")


def test_the_answer_varies_by_the_headers_that_choose() -> None:
    response = htmx.page_or_part(
        RequestFactory().get("/"), page=TEMPLATE, part=TEMPLATE, target="x", context={}, status=400
    )
    assert response.status_code == 400
    assert "HX-Request" in response["Vary"] and "HX-Target" in response["Vary"]
