"""The catalog: functions and bindings read from the app, ``%SETTING%`` expressions resolved."""

from __future__ import annotations

import asyncio

import azure.functions as func
import pytest

from devtools.localhost import BindingError, Catalog, build_catalog, import_app
from devtools.localhost.catalog import resolve
from tests.integration.localhost.conftest import Serve, base_env
from tests.integration.localhost.sample_app import Recorder, build_app

pytestmark = pytest.mark.integration


def _catalog(env: dict[str, str]) -> Catalog:
    loop = asyncio.new_event_loop()
    try:
        return build_catalog(build_app(Recorder(loop)), env)
    finally:
        loop.close()


def test_setting_expressions_are_resolved_in_every_binding() -> None:
    catalog = _catalog({**base_env("pre"), "TICK_SCHEDULE": "0 */5 * * * *"})

    work = catalog.functions["work"]
    assert work.trigger.get("queueName") == "pre-work"
    assert [b.get("queueName") for b in work.outputs] == ["pre-out"]
    assert catalog.functions["tick"].trigger.get("schedule") == "0 */5 * * * *"
    assert catalog.functions["ping"].trigger.get("route") == "svc/ping"


def test_an_unset_setting_is_named_and_only_its_function_is_left_out() -> None:
    env = base_env()
    del env["TICK_SCHEDULE"]

    catalog = _catalog(env)

    assert "TICK_SCHEDULE" in catalog.errors["tick"]
    assert "tick" not in catalog.functions
    assert "hello" in catalog.functions


def test_resolve_replaces_several_expressions_and_leaves_plain_text() -> None:
    env = {"A": "x", "B": "y"}

    assert resolve("%A%-%B%/plain", env) == "x-y/plain"
    assert resolve(["%A%", "GET"], env) == ["x", "GET"]
    with pytest.raises(BindingError, match="MISSING"):
        resolve("%MISSING%", env)


def test_a_binding_the_local_host_cannot_serve_is_reported() -> None:
    app = func.FunctionApp()

    @app.route(route="t")
    @app.table_input(arg_name="row", connection="C", table_name="t")
    def with_table(req: func.HttpRequest, row: str) -> str:
        return row

    catalog = build_catalog(app, {})

    assert "not supported" in catalog.errors["with_table"]


def test_import_app_reads_module_and_attribute() -> None:
    app = import_app("tests.integration.localhost.sample_module:custom")

    assert isinstance(app, func.FunctionApp)
    with pytest.raises(TypeError):
        import_app("tests.integration.localhost.sample_module:not_an_app")


async def test_the_banner_lists_every_function_and_says_local(serve: Serve) -> None:
    s = await serve(base_env())

    banner = s.host.banner()

    assert "LOCAL DEVELOPMENT HOST" in banner
    assert f"{s.host.base_url}/api/hello/{{name}}" in banner
    assert "eventgrid?functionName=on_event" in banner
    assert "/admin/functions/tick" in banner


def test_the_same_app_can_be_indexed_again() -> None:
    app = func.FunctionApp()

    @app.route(route="again")
    def again(req: func.HttpRequest) -> str:
        return "again"

    first = build_catalog(app, {})
    second = build_catalog(app, {})

    assert list(first.functions) == list(second.functions) == ["again"]


def test_indexing_leaves_a_plain_get_functions_working() -> None:
    app = func.FunctionApp()

    @app.route(route="plain")
    def plain(req: func.HttpRequest) -> str:
        return "plain"

    build_catalog(app, {})

    assert [f.get_function_name() for f in app.get_functions()] == ["plain"]
