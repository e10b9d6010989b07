"""HTTP triggers: routes, methods, parameters, responses and failures."""

from __future__ import annotations

import threading

import pytest

from tests.integration.localhost.conftest import Serve, base_env

pytestmark = pytest.mark.integration


async def test_route_parameter_and_query_reach_the_function(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.get("/api/hello/Ada%20L", params={"greeting": "hi"})

    assert (r.status_code, r.text) == (200, "hi Ada L")
    req = s.rec.of("hello")[0]
    assert req.method == "GET"
    assert req.route_params == {"name": "Ada L"}
    assert req.url.endswith("/api/hello/Ada%20L?greeting=hi")


async def test_query_values_reach_the_function_as_the_host_passes_them(serve: Serve) -> None:
    s = await serve(base_env())

    await s.client.get("/api/hello/Ada?greeting=hi&greeting=yo&empty=&tag=&tag=x")

    assert s.rec.of("hello")[0].params == {"greeting": "hi,yo", "tag": "x"}


async def test_constrained_parameter_matches_only_its_type(serve: Serve) -> None:
    s = await serve(base_env())

    ok = await s.client.get("/api/items/42")
    not_int = await s.client.get("/api/items/abc")

    assert ok.json() == {"method": "GET", "id": "42"}
    assert not_int.status_code == 404


async def test_each_listed_method_is_served(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.delete("/api/items/7")

    assert r.json() == {"method": "DELETE", "id": "7"}


async def test_a_method_the_route_does_not_list_is_405(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.post("/api/items/42")

    assert r.status_code == 405
    assert r.json()["allow"] == ["DELETE", "GET"]


async def test_a_path_no_function_serves_is_404(serve: Serve) -> None:
    s = await serve(base_env())

    assert (await s.client.get("/api/nothing/here")).status_code == 404
    assert (await s.client.get("/hello/x")).status_code == 404


async def test_body_and_headers_reach_a_sync_function_in_a_worker_thread(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.post("/api/echo", json={"a": 1}, headers={"X-Test": "yes"})

    assert r.json()["body"] == {"a": 1}
    assert r.json()["header"] == "yes"
    assert s.rec.of("echo")[0] != threading.current_thread().name


async def test_the_functions_response_is_returned_as_is(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.post("/api/echo", json={})

    assert r.status_code == 201
    assert r.headers["x-served-by"] == "echo"
    assert r.headers["content-type"] == "application/json"


async def test_an_exception_is_a_500_json_without_details(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.get("/api/boom")

    assert r.status_code == 500
    assert r.json() == {"error": "the function failed", "type": "RuntimeError"}
    assert "secret detail" not in r.text
    assert "Traceback" not in r.text


async def test_route_from_a_setting_expression_is_served(serve: Serve) -> None:
    s = await serve({**base_env(), "ROUTE_SETTING": "service-a"})

    assert (await s.client.get("/api/service-a/ping")).text == "pong"
    assert (await s.client.get("/api/%ROUTE_SETTING%/ping")).status_code == 404


async def test_function_auth_level_is_served_without_a_key(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.get("/api/keyed")

    assert (r.status_code, r.text) == (200, "keyed")


async def test_easy_auth_headers_never_reach_the_function(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.post(
        "/api/echo", json={}, headers={"X-MS-CLIENT-PRINCIPAL": "eyJmb3JnZWQiOnRydWV9"}
    )

    assert r.json()["principal"] is None


async def test_root_says_it_is_a_local_development_host(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.get("/")

    assert "LOCAL DEVELOPMENT HOST" in r.text
    assert "func start" in r.text
