"""Azure Functions entry points: triggers only.

Each trigger parses its input, calls one function in ``shared/``, and translates the outcome
(HTTP status, raise-to-retry, log). Importing this module needs no settings and no network, and
loads neither the Tables SDK, httpx nor cryptography: they are imported lazily on first use.
"""

from __future__ import annotations

import os
import typing

import azure.functions as func

from shared.log_levels import quiet_library_loggers

# Before any SDK logs: the worker forwards every INFO record to Application Insights.
quiet_library_loggers(os.environ)

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name(name="on_chat_event")
@app.event_grid_trigger(arg_name="event")
async def on_chat_event(event: func.EventGridEvent) -> None:
    """An ACS chat event: one push per device of its recipient; raises so Event Grid redelivers."""
    from shared.edges.event_grid import event_json
    from shared.push.pipeline import PushIncompleteError
    from shared.usecases.chat import handle_chat_event
    from shared.wiring import container, utc_now

    c = container()
    summary = await handle_chat_event(
        event_json(event),
        devices=await c.device_registry(),
        deliveries=await c.deliveries(),
        inbox=await c.inbox(),
        pushers=await c.pushers(),
        settings=c.settings,
        clock=utc_now,
        alarm=c.config_alarm(),
        source=c.event_source(),
    )
    if summary.retry_needed:
        raise PushIncompleteError(summary)


@app.function_name(name="on_call_event")
@app.event_grid_trigger(arg_name="event")
async def on_call_event(event: func.EventGridEvent) -> None:
    """An ACS IncomingCall: a VoIP push to each of the callee's PushKit devices while it rings."""
    from shared.edges.event_grid import event_json
    from shared.push.pipeline import PushIncompleteError
    from shared.usecases.calls import handle_call_event
    from shared.wiring import container, utc_now

    c = container()
    summary = await handle_call_event(
        event_json(event),
        devices=await c.device_registry(),
        deliveries=await c.deliveries(),
        inbox=await c.inbox(),
        pushers=await c.pushers(),
        settings=c.settings,
        clock=utc_now,
        alarm=c.config_alarm(),
        source=c.event_source(),
    )
    if summary.retry_needed:
        raise PushIncompleteError(summary)


@app.function_name(name="issue_token")
@app.route(route="token", methods=["POST"])
async def issue_token(req: func.HttpRequest) -> func.HttpResponse:
    """An ACS user access token for the caller's own ACS identity (created on first use)."""
    from shared.edges.http_api import error_response, json_response
    from shared.errors import PushRelayError
    from shared.usecases.access_tokens import issue_token as issue
    from shared.wiring import container

    c = container()
    try:
        caller = await c.caller(dict(req.headers))
        identities, acs = await c.identities(), await c.acs_identity()
        issued = await issue(caller, identities, acs, c.token_policy(), known=c.known_identities())
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, issued.as_json())


@app.function_name(name="put_device")
@app.route(route="devices", methods=["PUT"])
async def put_device(req: func.HttpRequest) -> func.HttpResponse:
    """Register or renew the caller's device (202 while a token move awaits its proof); the token
    travels in the body, never in a URL."""
    from shared.edges.http_api import error_response, json_response, read_json_body
    from shared.errors import PushRelayError
    from shared.usecases.registration import parse_device_request, register_device
    from shared.wiring import container, utc_now

    c = container()
    try:
        caller = await c.caller(dict(req.headers))
        rules = c.registration_rules()
        # Validate before mapping the caller: a bad body creates no identity, touches no storage.
        body = read_json_body(req, c.settings.max_request_body_bytes)
        device = parse_device_request(body, rules.allowed_topics)
        user_id = await c.acs_user(caller)
        registry, schedule = await c.device_registry(), await c.renewal_schedule()
        done = await register_device(
            user_id,
            device,
            utc_now(),
            registry=registry,
            schedule=schedule,
            rules=rules,
            days=await c.device_days(),
            moves=await c.token_moves(),
        )
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(done.status, done.as_json())


@app.function_name(name="list_devices")
@app.route(route="devices", methods=["GET"])
async def list_devices(req: func.HttpRequest) -> func.HttpResponse:
    """The caller's devices, without keys and with tokens shortened."""
    from shared.edges.http_api import error_response, json_response
    from shared.errors import PushRelayError
    from shared.usecases.registration import list_devices as listing
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        devices = await listing(user_id, utc_now(), registry=await c.device_registry())
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, {"devices": devices})


@app.function_name(name="delete_device")
@app.route(route="devices/{deviceId}", methods=["DELETE"])
async def delete_device(req: func.HttpRequest) -> func.HttpResponse:
    """Remove one of the caller's devices (404 for anyone else's, as for a missing one)."""
    from shared.edges.http_api import error_response
    from shared.errors import PushRelayError
    from shared.usecases.registration import remove_device
    from shared.wiring import container

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        registry, schedule = await c.device_registry(), await c.renewal_schedule()
        device_id = req.route_params.get("deviceId", "")
        await remove_device(
            user_id, device_id, registry=registry, schedule=schedule, rules=c.registration_rules()
        )
    except PushRelayError as exc:
        return error_response(exc)
    return func.HttpResponse(status_code=204)


@app.function_name(name="get_unread")
@app.route(route="unread", methods=["GET"])
async def get_unread(req: func.HttpRequest) -> func.HttpResponse:
    """The caller's badge and each thread's unread number."""
    from shared.edges.http_api import error_response, json_response
    from shared.errors import PushRelayError
    from shared.usecases.read_reports import unread_counts
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        body = await unread_counts(user_id, utc_now(), inbox=await c.inbox())
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, body)


@app.function_name(name="put_read")
@app.route(route="threads/{threadId}/read", methods=["PUT"])
async def put_read(req: func.HttpRequest) -> func.HttpResponse:
    """The caller read a thread up to a message; their other devices' badges follow."""
    from shared.edges.http_api import error_response, json_response, read_json_body
    from shared.errors import PushRelayError
    from shared.usecases.read_reports import parse_thread_id, report_read
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        thread_id = parse_thread_id(req.route_params.get("threadId"))
        body = read_json_body(req, c.settings.max_request_body_bytes)
        answer = await report_read(
            user_id, thread_id, body, utc_now(), inbox=await c.inbox(),
            updates=await c.badge_updates(),
        )  # fmt: skip
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, answer)


@app.function_name(name="get_preferences")
@app.route(route="preferences", methods=["GET"])
async def get_preferences(req: func.HttpRequest) -> func.HttpResponse:
    """The caller's badge and quiet-hours choices and their muted threads."""
    from shared.edges.http_api import error_response, json_response
    from shared.errors import PushRelayError
    from shared.usecases.preferences import get_preferences as view
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        body = await view(user_id, utc_now(), inbox=await c.inbox())
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, body)


@app.function_name(name="put_preferences")
@app.route(route="preferences", methods=["PUT"])
async def put_preferences(req: func.HttpRequest) -> func.HttpResponse:
    """Change the caller's badge and quiet-hours choices."""
    from shared.edges.http_api import error_response, json_response, read_json_body
    from shared.errors import PushRelayError
    from shared.usecases.preferences import put_preferences as change
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        body = read_json_body(req, c.settings.max_request_body_bytes)
        answer = await change(
            user_id, body, utc_now(), inbox=await c.inbox(), updates=await c.badge_updates()
        )
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, answer)


@app.function_name(name="put_thread_preferences")
@app.route(route="threads/{threadId}/preferences", methods=["PUT"])
async def put_thread_preferences(req: func.HttpRequest) -> func.HttpResponse:
    """Mute a thread for the caller (until a time or for good), or set its alerts."""
    from shared.edges.http_api import error_response, json_response, read_json_body
    from shared.errors import PushRelayError
    from shared.usecases.preferences import put_thread_preferences as change
    from shared.usecases.read_reports import parse_thread_id
    from shared.wiring import container, utc_now

    c = container()
    try:
        user_id = await c.caller_acs_user(dict(req.headers))
        thread_id = parse_thread_id(req.route_params.get("threadId"))
        body = read_json_body(req, c.settings.max_request_body_bytes)
        answer = await change(
            user_id, thread_id, body, utc_now(), inbox=await c.inbox(),
            updates=await c.badge_updates(),
        )  # fmt: skip
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, answer)


@app.function_name(name="delivery_log")
@app.route(route="deliveries", methods=["GET"])
async def delivery_log(req: func.HttpRequest) -> func.HttpResponse:
    """What happened to message M in thread T for user U (DELIVERY_LOG_ADMINS only)."""
    from shared.edges.http_api import error_response, json_response
    from shared.errors import PushRelayError
    from shared.usecases.delivery_log import answer_log_request
    from shared.wiring import container

    c = container()
    try:
        caller = await c.caller(dict(req.headers))
        body = await answer_log_request(req.params, caller, c.settings, await c.deliveries())
    except PushRelayError as exc:
        return error_response(exc)
    return json_response(200, body)


@app.function_name(name="purge")
@app.timer_trigger(arg_name="timer", schedule="%PURGE_SCHEDULE%")
async def purge(timer: func.TimerRequest) -> None:
    """Delivery records past DELIVERY_RETENTION_DAYS, then stale registrations: no full scans."""
    from shared.storage.registry_purge import purge_registrations
    from shared.usecases.delivery_log import purge_deliveries
    from shared.wiring import container, utc_now

    c = container()
    await purge_deliveries(await c.deliveries(), c.settings, utc_now)
    registry, schedule = await c.device_registry(), await c.renewal_schedule()
    await purge_registrations(await c.device_days(), registry, schedule, c.settings, utc_now)


@app.function_name(name="renewal_sweep")
@app.timer_trigger(arg_name="timer", schedule="%RENEWAL_SCHEDULE%", use_monitor=True)
@app.queue_output(arg_name="shards", queue_name="%RENEWAL_QUEUE%", connection="AzureWebJobsStorage")
async def renewal_sweep(
    timer: func.TimerRequest,
    # The worker refuses builtin generics such as list[str] ("invalid non-type annotation") and
    # indexes none of the app's functions: typing.List stays (the worker-indexing test holds it).
    shards: func.Out[typing.List[str]],  # noqa: UP006
) -> None:
    """Read the renewal buckets due since the last sweep; one queue message per shard."""
    from shared.usecases.renewal import run_sweep
    from shared.wiring import container, utc_now

    c = container()
    swept = await run_sweep(
        schedule=await c.renewal_schedule(), sweeps=await c.sweep_log(), now=utc_now(),
        rules=c.renewal_rules(),
    )  # fmt: skip
    shards.set(list(swept.messages))


@app.function_name(name="renewal_worker")
@app.queue_trigger(arg_name="msg", queue_name="%RENEWAL_QUEUE%", connection="AzureWebJobsStorage")
async def renewal_worker(msg: func.QueueMessage) -> None:
    """Wake one shard's devices with background pushes; raises (redelivery) on storage outages."""
    from shared.usecases.renewal import renew_shard, shard_from_message
    from shared.wiring import container, utc_now

    c = container()
    shard = shard_from_message(msg.get_body())
    if shard is not None:
        await renew_shard(
            shard, devices=await c.device_registry(), schedule=await c.renewal_schedule(),
            sweeps=await c.sweep_log(), pushers=await c.pushers(), rules=c.renewal_rules(),
            clock=utc_now, alarm=c.config_alarm(),
        )  # fmt: skip
