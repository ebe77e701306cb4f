"""The layers of docs/architecture.md hold (import-linter, as `make lint` runs it), and a
contract breaks when an import goes the wrong way."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGES = ("core", "lib", "accounts", "catalog", "keys", "billing", "portal", "relay", "serving")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages to break (import-linter reads imports, runs nothing)."""
    for name in (*PACKAGES, "simulators"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # A cycle: keys is below billing, so billing's usage rows may point at keys, not back.
        (
            "keys/models.py",
            "from billing.models import LedgerEntry",
            "keys is not allowed to import billing",
        ),
        # Dodged inside a function body, it is a cycle still.
        (
            "catalog/loader.py",
            "def _f():\n    from keys import services",
            "catalog is not allowed to import keys",
        ),
        # Inside billing: the ledger is below the payment state machine that credits through it.
        (
            "billing/ledger.py",
            "from billing import payments",
            "billing.ledger is not allowed to import billing.payments",
        ),
        # The state machine is below the top-ups that call a provider, even from a function.
        (
            "billing/payments.py",
            "def _f():\n    from billing import topups",
            "billing.payments is not allowed to import billing.topups",
        ),
        ("core/pricing.py", "import django", "The core is pure"),
        ("relay/app.py", "from billing import ledger", "never Django"),
    ],
)
def test_an_import_the_wrong_way_breaks_a_contract(
    tree: Path, module: str, line: str, broken: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + "\n\n" + line + "\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert broken in done.stdout, done.stdout


def test_a_billing_module_that_is_in_no_layer_breaks_the_contract(tree: Path) -> None:
    (tree / "billing" / "bonus.py").write_text("from billing import ledger\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "- billing.bonus" in done.stdout, done.stdout


def imports_in_function_bodies(path: Path) -> list[str]:
    """``file:line`` of every import made inside a function (a cycle dodged, or a dependency
    hidden from the contracts), except an app's ready() registering its receivers."""
    found: list[str] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
            elif isinstance(child, ast.Import | ast.ImportFrom) and function is not None:
                if not (path.name == "apps.py" and function == "ready"):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            else:
                visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), None)
    return found


def test_no_import_hides_in_a_function_body() -> None:
    apps = ("core", "lib", "accounts", "catalog", "keys", "billing", "portal")
    found = [
        where
        for name in apps
        for path in sorted((ROOT / name).rglob("*.py"))
        if "migrations" not in path.parts
        for where in imports_in_function_bodies(path)
    ]
    assert not found
