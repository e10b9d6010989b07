"""HTTP route templates as the Functions host reads them (ASP.NET route syntax, a subset).

Supported: literal segments (case-insensitive), ``{name}``, optional ``{name?}``, constrained
``{name:int}`` / ``{name:alpha}`` / ``{name:guid}`` / ``{name:bool}`` / ``{name:long}``,
defaults ``{name=value}`` and catch-all ``{*name}``. A function without a route is served at its
own name, like the host does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from devtools.localhost.catalog import FunctionSpec

_PARAM = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
}


@dataclass(frozen=True)
class Route:
    """One HTTP-triggered function's route, compiled."""

    function: FunctionSpec
    template: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    defaults: tuple[tuple[str, str], ...]
    methods: frozenset[str] | None
    rank: tuple[int, int, int]

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters when ``path`` (still percent-encoded, no prefix) matches."""
        m = self.pattern.fullmatch(path)
        if m is None:
            return None
        params = dict(self.defaults)
        for index, name in enumerate(self.names):
            value = m.group(f"p{index}")
            if value is not None:
                params[name] = unquote(value)
        return params

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


def _parameter(spec: str, index: int) -> tuple[str, str, bool, str | None]:
    """(name, regex, optional, default) of one ``{...}`` parameter."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    default: str | None = None
    if "=" in spec:
        spec, default = spec.split("=", 1)
    optional = spec.endswith("?") or default is not None or catch_all
    spec = spec.rstrip("?")
    name, *constraints = spec.split(":")
    regex = ".*" if catch_all else "[^/]+"
    for c in constraints:
        regex = _CONSTRAINTS.get(c.split("(")[0].lower(), regex)
    return name, f"(?P<p{index}>{regex})", optional, default


def compile_route(function: FunctionSpec) -> Route:
    """Compile the route of an HTTP-triggered function."""
    template = str(function.trigger.get("route") or function.name).strip("/")
    names: list[str] = []
    defaults: list[tuple[str, str]] = []
    pieces: list[str] = []
    literals = 0
    for position, segment in enumerate(template.split("/") if template else []):
        sep = "/" if position else ""
        whole = _PARAM.fullmatch(segment)
        if whole is not None:
            name, regex, optional, default = _parameter(whole.group(1), len(names))
            names.append(name)
            if default is not None:
                defaults.append((name, default))
            pieces.append(f"(?:{sep}{regex})?" if optional else sep + regex)
            continue
        literals += 1
        out, last = [], 0
        for m in _PARAM.finditer(segment):
            out.append(re.escape(segment[last : m.start()]))
            name, regex, _, _ = _parameter(m.group(1), len(names))
            names.append(name)
            out.append(regex)
            last = m.end()
        out.append(re.escape(segment[last:]))
        pieces.append(sep + "".join(out))
    methods = function.trigger.get("methods")
    allowed = frozenset(m.upper() for m in methods) if methods else None
    catch_all = int("{*" in template)
    return Route(
        function=function,
        template=template,
        pattern=re.compile("".join(pieces), re.IGNORECASE),
        names=tuple(names),
        defaults=tuple(defaults),
        methods=allowed,
        rank=(catch_all, -literals, len(names)),
    )


@dataclass(frozen=True)
class RouteTable:
    """Every HTTP route, most specific first."""

    routes: Sequence[Route]

    @classmethod
    def build(cls, functions: Iterable[FunctionSpec]) -> RouteTable:
        return cls(sorted((compile_route(f) for f in functions), key=lambda r: r.rank))

    def find(self, method: str, path: str) -> tuple[Route | None, dict[str, str], set[str]]:
        """(route, params, allowed methods): route is None on 404 (no methods) or 405."""
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.allows(method):
                return route, params, allowed
            allowed |= set(route.methods or ())
        return None, {}, allowed
