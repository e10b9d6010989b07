"""Use cases: the renewal sweep (schedule → shards) and the worker (shard → background pushes).

A preview key lives 45 minutes; apps hand over a fresh one when they run. Devices whose key falls
due are woken with a silent background push (``{"aps": {"content-available": 1}}``, push type
``background``, priority 5) so the app runs and renews. Apple throttles these (a few per device
per hour; force-quit apps are not woken at all), so every wake is drawn from one per-device
budget that withdraw-on-delete pushes share (:mod:`shared.push.budget`).

**Sweep** (timer, :func:`run_sweep`). Reads the renewal schedule from the bucket after the
checkpoint through the bucket holding ``now`` (entries are already written at key expiry minus
``RENEWAL_LEAD_MINUTES``, so this is every device due before the next sweep), never further back
than ``RENEWAL_CATCH_UP_HOURS``: buckets missed while the app was down are caught up, bounded.
The checkpoint (``shared.storage.renewal_sweeps``) is claimed under its ETag with a lease before
reading,
so a timer that fires twice reads nothing the second time. Entries are grouped by device (a
device due in several buckets is woken once, from its latest entry) and split into JSON shards
of at most ``RENEWAL_SHARD_SIZE`` devices (fewer when a queue message would be too big), each
carrying what its entries carry: the queue messages. Buckets that have left the catch-up window
get a purge message. The device table is never scanned.

**Worker** (queue, :func:`renew_shard`). An entry carries what the worker needs
(:class:`~shared.storage.renewal_schedule.EntryState`: token, topic, environment, budget, and the
device's ETag when that was true), so a device is not read on the common path:

1. decide on the carried state: over budget → a later entry; too many unanswered wakes → mark
   stale (under the ETag); otherwise
2. *claim* the wake: write the push into the device's budget under the carried ETag (one round
   trip). If the device changed since (it renewed, got a withdraw push, was removed), the write
   fails: read it, skip it if it renewed after the entry was written (or is gone or stale), else
   decide again on what was read. A second delivery of the shard loses the same way and finds
   the budget spent, so no device is pushed twice;
3. push and settle through the one pipeline, as chat push does (``shared.push``: 410
   removes, bad tokens count and a 200 clears them, configuration errors delete nothing); a
   wake without an answer (429, 5xx, timeouts) gives its budget back and is retried in the
   next bucket;
4. write each device's next entry, carrying its new state, at the earliest time its budget
   allows: devices handled together are due together, so the entries share a bucket partition
   and go out in one transaction per 100 — one batched write per device.

After ``RENEWAL_STALE_AFTER`` unanswered wakes a device is marked stale and leaves the schedule
(its chat pushes continue, with the generic text, until the app runs and registers again).

**Renewal rate.** Each wake records its sweep on the device. When the device's next entry finds
it renewed since (it is read then: its ETag changed), the sweep is credited;
``devtools/renewal_rate.py`` prints woken, renewed and the rate per sweep.

Storage errors propagate (``TransientError``: the queue redelivers the shard, which is safe).

The package is split by job: :mod:`.rules` (settings and pure decisions), :mod:`.shards` (the
queue message format), :mod:`.sweep` (schedule -> shards) and :mod:`.worker` (shard -> pushes).
"""

from shared.usecases.renewal.rules import Decision, RenewalRules
from shared.usecases.renewal.shards import (
    MalformedShardError,
    Shard,
    ShardItem,
    parse_shard,
    shard_from_message,
)
from shared.usecases.renewal.sweep import SweepLog, SweepResult, run_sweep
from shared.usecases.renewal.worker import RenewalDevices, renew_shard

__all__ = [
    "Decision",
    "MalformedShardError",
    "RenewalDevices",
    "RenewalRules",
    "Shard",
    "ShardItem",
    "SweepLog",
    "SweepResult",
    "parse_shard",
    "renew_shard",
    "run_sweep",
    "shard_from_message",
]
