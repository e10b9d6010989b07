"""The exception tree drawn in shared/errors.py is the one in the code; the edge maps it all."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import shared
import shared.errors
from shared.edges.http_api import STATUS
from shared.errors import PushRelayError

pytestmark = pytest.mark.unit

_LINE = re.compile(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z][A-Za-z]+)(?:\s|$)")


def drawn_tree() -> dict[str, str | None]:
    """Each class drawn in the docstring, with the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in (shared.errors.__doc__ or "").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        del stack[depth:]
        parents[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    return parents


def app_errors() -> dict[str, type[PushRelayError]]:
    """Every PushRelayError subclass defined in shared/ (outside the standalone shared.apns)."""
    found: dict[str, type[PushRelayError]] = {}
    for info in pkgutil.walk_packages(shared.__path__, "shared."):
        if info.name.startswith("shared.apns"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, PushRelayError)
                and value.__module__ == info.name
            ):
                found[value.__name__] = value
    return found


def test_every_exception_class_in_shared_is_drawn_in_the_tree_under_its_parent() -> None:
    drawn, real = drawn_tree(), app_errors()
    assert set(drawn) == set(real)
    for name, cls in real.items():
        parent = cls.__mro__[1].__name__ if cls is not PushRelayError else None
        assert drawn[name] == parent, name


def test_every_exception_class_is_mapped_to_a_status_at_the_edge() -> None:
    for name, cls in app_errors().items():
        statuses = [status for mapped, status in STATUS if issubclass(cls, mapped)]
        assert statuses, name
        assert 400 <= statuses[0] < 600, name


_WHERE = re.compile(r"^    [│├└─ ]*([A-Z][A-Za-z]+)\s+([a-z_]+(?:\.[a-z_]+)*)(?::|$)")


def test_the_module_drawn_beside_a_class_is_where_it_is_defined() -> None:
    real = app_errors()
    drawn = [
        (match.group(1), "shared." + match.group(2))
        for line in (shared.errors.__doc__ or "").splitlines()
        if (match := _WHERE.match(line)) is not None
    ]
    assert drawn
    for name, module in drawn:
        defined = real[name].__module__
        assert defined == module or defined.startswith(module + "."), (name, module, defined)
