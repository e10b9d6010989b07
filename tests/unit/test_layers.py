"""The folders of shared/ are its layers: what each may import is checked on the source.

Pure code (shared/domain) reads no storage, calls no edge and runs no use case; use cases and the
push pipeline never reach up into the edges or the composition root; only the edges meet Azure
Functions' own types. There are no exceptions: a crossing fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SHARED = Path(__file__).resolve().parents[2] / "shared"


def module_name(path: Path) -> str:
    parts = path.relative_to(SHARED.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module the file imports, at any depth (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def shared_imports(path: Path) -> set[str]:
    """Every shared.* module the file imports."""
    return {name for name in imports(path) if name.split(".")[0] == "shared"}


def modules_in(folder: str) -> dict[str, set[str]]:
    return {module_name(p): shared_imports(p) for p in sorted((SHARED / folder).rglob("*.py"))}


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_domain_imports_only_domain_apns_errors_and_settings() -> None:
    allowed = ("shared.domain", "shared.apns", "shared.errors", "shared.settings")
    for module, imports in modules_in("domain").items():
        extra = {name for name in imports if not under(name, allowed)}
        assert extra == set(), module


def test_use_cases_and_the_pipeline_never_import_edges_or_the_composition_root() -> None:
    banned = ("shared.edges", "shared.wiring", "shared.acs")
    for folder in ("usecases", "push"):
        for module, imports in modules_in(folder).items():
            reached = {n for n in imports if under(n, banned)}
            assert reached == set(), module


def test_apns_imports_nothing_else_of_shared() -> None:
    for module, imports in modules_in("apns").items():
        assert {name for name in imports if not under(name, ("shared.apns",))} == set(), module


# What talks to Table Storage itself: the SDK and our lean client (its wire format, its HTTP).
STORAGE_CLIENTS = (
    "azure.data.tables",
    "shared.storage.table_client",
    "shared.storage.table_http",
    "shared.storage.table_wire",
    "shared.storage.tables_sdk",
)


def test_only_storage_imports_the_tables_sdk_or_the_table_client() -> None:
    outside = [
        p for p in sorted(SHARED.rglob("*.py")) if "storage" not in p.relative_to(SHARED).parts[:1]
    ]
    assert outside
    for path in outside:
        reached = {name for name in imports(path) if under(name, STORAGE_CLIENTS)}
        assert reached == set(), module_name(path)


def test_only_the_edges_import_azure_functions() -> None:
    # The worker's request and event objects are decoded at the edge (shared/edges/http_api.py,
    # shared/edges/event_grid.py); the layers inside get plain data.
    inner = [p for p in sorted(SHARED.rglob("*.py")) if p.relative_to(SHARED).parts[0] != "edges"]
    assert inner
    for path in inner:
        reached = {name for name in imports(path) if under(name, ("azure.functions",))}
        assert reached == set(), module_name(path)


def test_domain_reads_no_storage() -> None:
    for module, found in modules_in("domain").items():
        assert {name for name in found if under(name, ("shared.storage",))} == set(), module
