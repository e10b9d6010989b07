"""The developer console: what each phone would show, the APNs wire, and actions.

Served by the local run (``bash scripts/run-local.sh``) beside the app; development only (this
folder is left out of the deployed package). See the README's "Developer console" section:
:mod:`~devtools.console.server` (HTTP and server-sent events), :mod:`~devtools.console.state`
(phones, wire, refresh), :mod:`~devtools.console.lockscreen` (what iOS shows, push by push),
:mod:`~devtools.console.reference_phone` (the phones: reference devices, the app of docs/ios.md),
:mod:`~devtools.console.actions`, :mod:`~devtools.console.acs_events`,
:mod:`~devtools.console.sources`.
"""
