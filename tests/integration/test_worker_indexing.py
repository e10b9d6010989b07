"""The app as the real Azure Functions Python worker indexes it (its own code, from PyPI).

Azure's host serves nothing when the worker refuses one function, and the first round shipped an
app it refused (``func.Out[list[str]]``) because only our own stand-in had ever indexed it. These
tests index ``function_app`` with the worker's code; the last ones show the check bites.
"""

from __future__ import annotations

import json
import typing

import azure.functions as func
import pytest
from azure.functions.decorators.core import BindingDirection, DataType

import function_app
from devtools.localhost.catalog import app_functions
from devtools.localhost.worker import PROTOS, WorkerIndexError, index_functions

pytestmark = pytest.mark.integration

FUNCTIONS = {
    "on_chat_event", "on_call_event", "issue_token", "put_device", "list_devices",
    "delete_device", "delivery_log", "purge", "renewal_sweep", "renewal_worker",
    "get_unread", "put_read", "get_preferences", "put_preferences", "put_thread_preferences",
}  # fmt: skip


def test_the_worker_indexes_every_function_of_the_app() -> None:
    indexed = index_functions(app_functions(function_app.app))

    assert {f.name for f in indexed} == FUNCTIONS


def test_the_bindings_the_worker_reports_to_the_host_are_the_decorators() -> None:
    declared = {
        f.get_function_name(): json.loads(f.get_function_json())["bindings"]
        for f in app_functions(function_app.app)
    }

    reported = {
        f.name: list(f.raw_bindings) for f in index_functions(app_functions(function_app.app))
    }

    assert reported == declared


def test_the_renewal_sweep_output_is_a_typing_list_the_worker_accepts() -> None:
    (sweep,) = (
        f.get_user_function()
        for f in app_functions(function_app.app)
        if f.get_function_name() == "renewal_sweep"
    )
    hints = typing.get_type_hints(sweep)

    assert typing.get_args(hints["shards"]) == (typing.List[str],)  # noqa: UP006


def _app_with_builtin_generic_output() -> func.FunctionApp:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *")
    @app.queue_output(arg_name="shards", queue_name="q", connection="AzureWebJobsStorage")
    def sweep(timer: func.TimerRequest, shards: func.Out[list[str]]) -> None:
        shards.set([])

    return app


def test_the_worker_refuses_a_builtin_generic_output_annotation() -> None:
    with pytest.raises(WorkerIndexError) as refused:
        index_functions(app_functions(_app_with_builtin_generic_output()))

    assert str(refused.value) == (
        "cannot load the sweep function: binding shards has invalid non-type annotation "
        "azure.functions._abc.Out[list[str]]"
    )


def test_one_refused_function_fails_the_whole_index() -> None:
    app = _app_with_builtin_generic_output()

    @app.route(route="fine")
    def fine(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    with pytest.raises(WorkerIndexError):
        index_functions(app_functions(app))


def test_an_in_binding_annotated_as_out_is_refused() -> None:
    app = func.FunctionApp()

    @app.route(route="r")
    def handler(req: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse("ok")

    with pytest.raises(WorkerIndexError, match='declared to have the "in" direction'):
        index_functions(app_functions(app))


def test_the_message_stand_ins_carry_the_grpc_contract_enum_values() -> None:
    info = PROTOS.BindingInfo

    assert (getattr(info, "in"), info.out, info.inout) == tuple(d.value for d in BindingDirection)
    assert (info.undefined, info.string, info.binary, info.stream) == tuple(
        d.value for d in DataType
    )
