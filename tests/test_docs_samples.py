"""Every sample of the user docs runs against the real stack, and prints what the page says.

Each ``python``/``bash`` block of docs/site/<lang>/<slug>.md is one case (id
``<lang>/<slug>:<line>``): a real relay process and the demo upstream behind the seed catalog,
the portal as a live server, and a reader with $100 and two real keys (an API key and a
management key) in ``TOKENPAPA_API_KEY`` / ``TOKENPAPA_MANAGEMENT_KEY``. The runner itself
(tests/docs_samples.py) is tested first on a page made here, so a green run means something.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .conftest import credit, publish_catalog
from .docs_samples import SITE, output_matches, page_samples, run_sample, site_samples

SAMPLES = site_samples()


def sample_env(tmp_path: Path, api_key: str = "", management_key: str = "") -> dict[str, str]:
    """What a reader's shell has: PATH, a home, a UTF-8 locale and the two keys; no other secret."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TOKENPAPA_API_KEY": api_key,
        "TOKENPAPA_MANAGEMENT_KEY": management_key,
    }


# ---- the runner ------------------------------------------------------------------------------

SYNTHETIC = """\
---
title: A page of the runner's own
---

# Samples

```python
print("hello")
print("id: chatcmpl-123")
print("a")
print("b")
print("end")
```

```text output
hello
id: chatcmpl-...
...
end
```

```bash
echo "{{ base_url }} {{ relay_root }} {{ portal_url }}"
```

```text output
http://relay.test/v1 http://relay.test http://portal.test
```

```python
raise SystemExit(3)
```

```bash
echo two
```

```text output
one
```

```python no-run
this is not Python
```

```javascript
console.log("hi")
```

Some prose.

```text output
stale
```

~~~bash
echo "$TOKENPAPA_API_KEY"
~~~
"""

VALUES = {
    "base_url": "http://relay.test/v1",
    "relay_root": "http://relay.test",
    "portal_url": "http://portal.test",
}


def test_the_runner_catches_what_it_must(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "en").mkdir(parents=True)
    page = site / "en" / "synthetic.md"
    page.write_text(SYNTHETIC)
    samples = page_samples(page, site)
    # The no-run block is no case; the orphan output is one, so it cannot go stale unseen.
    assert [(s.id, s.language) for s in samples] == [
        ("en/synthetic:7", "python"),
        ("en/synthetic:22", "bash"),
        ("en/synthetic:30", "python"),
        ("en/synthetic:34", "bash"),
        ("en/synthetic:46", "javascript"),
        ("en/synthetic:52", "orphan-output"),
        ("en/synthetic:56", "bash"),
    ]
    env = sample_env(tmp_path, api_key="tp-sk-example")
    outcomes = [run_sample(s, VALUES, env, tmp_path) for s in samples]
    assert [o.ok for o in outcomes] == [True, True, False, False, False, False, True]
    assert "docs/site/en/synthetic.md, line 30: exit status 3" in outcomes[2].report
    mismatch = outcomes[3].report
    assert "line 34: output differs" in mismatch and "one" in mismatch and "two" in mismatch
    assert "npm package" in outcomes[4].report
    assert "follows no sample" in outcomes[5].report


def test_doctest_style_output_matching() -> None:
    assert output_matches("a ... c\n", "a b c\n")
    assert output_matches("x\n...\ny\n", "x\ny\n")
    assert output_matches("x\n...\ny\n", "x\n1\n2\ny\n\n")
    assert not output_matches("x\ny\n", "x\nz\ny\n")
    assert not output_matches("a ... c\n", "a b\nc\n")
    assert not output_matches("a\n", "a\nb\n")


# ---- the docs --------------------------------------------------------------------------------


def test_the_docs_have_samples() -> None:
    assert SAMPLES, f"no runnable sample found under {SITE}"


@pytest.fixture
def stack(catalog: None, relay: Any, live_server: Any, make_user: Any) -> dict[str, str]:
    """The values a sample needs: placeholders and the reader's keys ($100 on the balance)."""
    from keys.services import issue_key, issue_management_key

    publish_catalog(relay)
    reader = make_user("reader@example.com")
    credit(reader, 100)
    _, api_key = issue_key(account=reader.account, name="docs")
    _, management_key = issue_management_key(account=reader.account, name="docs")
    return {
        "base_url": relay.base_url,
        "relay_root": relay.base_url.removesuffix("/v1"),
        "portal_url": live_server.url,
        "api_key": api_key,
        "management_key": management_key,
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_docs_sample(
    sample: Any, stack: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if sample.id.split(":")[0].endswith("/usage-api"):
        # Its samples read back the usage of a call they make: a worker records it.
        request.getfixturevalue("worker")
    values = {k: stack[k] for k in ("base_url", "relay_root", "portal_url")}
    env = sample_env(tmp_path, stack["api_key"], stack["management_key"])
    workdir = tmp_path / "work"
    workdir.mkdir()
    outcome = run_sample(sample, values, env, workdir)
    assert outcome.ok, textwrap.indent(outcome.report, "  ")
