"""The developer console is development only: it never reaches the deployed package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_funcignore_leaves_devtools_and_so_the_console_out_of_the_package() -> None:
    lines = (REPO / ".funcignore").read_text().split()
    assert {"devtools", "devtools/"} & set(lines)
    assert (REPO / "devtools" / "console" / "server.py").exists()


def test_neither_the_triggers_nor_shared_import_devtools() -> None:
    sources = [REPO / "function_app.py", *sorted((REPO / "shared").rglob("*.py"))]
    importing = [
        str(p.relative_to(REPO))
        for p in sources
        if re.search(r"^\s*(from|import)\s+devtools\b", p.read_text(), re.M)
    ]
    assert importing == []


def test_the_built_package_holds_only_the_app_and_shared() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert [p for p in found if not p.startswith("shared")] == []
