"""A local development host for the Function App (Core Tools cannot be installed offline).

    host = LocalHost(import_app("function_app"), os.environ, HostOptions(port=0))
    base_url = await host.start()      # HTTP, Event Grid webhook, admin, timers, queues
    ...
    await host.stop()

Run it on its own with ``python -m devtools.localhost`` (see ``--help``); the README's run
command starts it together with Azurite and the development services.
"""

from devtools.localhost.catalog import (
    Binding,
    BindingError,
    Catalog,
    FunctionSpec,
    build_catalog,
    import_app,
)
from devtools.localhost.queues import QueueOptions
from devtools.localhost.server import HostJson, HostOptions, LocalHost
from devtools.localhost.timers import Clock, ManualClock, SystemClock

__all__ = [
    "Binding",
    "BindingError",
    "Catalog",
    "Clock",
    "FunctionSpec",
    "HostJson",
    "HostOptions",
    "LocalHost",
    "ManualClock",
    "QueueOptions",
    "SystemClock",
    "build_catalog",
    "import_app",
]
