"""Where the console reads from and acts on: the APNs simulator's control endpoint and the app's
tables (devices, renewals, deliveries) in Azurite.

The simulator is reached only over its HTTP control endpoint (docs/apns-simulator.md), so the
console works the same with the local run's simulator process and a test's in-process one. The
tables are read with the app's own storage code (``shared.storage.tables``,
``shared.storage.deliveries``): the
console shows the app's state as the app would read it. Listing every device is a full scan of
the devices table: fine for a development store, never something the app does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.storage.deliveries import DELIVERIES_TABLE, DeliveryRecord, TableDeliveryStore
from shared.storage.devices import DEVICES_TABLE
from shared.storage.renewal_schedule import RENEWALS_TABLE, ScheduleEntry, bucket_start
from shared.storage.tables import Tables, decode_key, read_int

log = logging.getLogger(__name__)


class SimulatorUnavailableError(RuntimeError):
    """The simulator's control endpoint did not answer (or there is no simulator)."""


class Simulator:
    """The APNs simulator's control endpoint (JSON over HTTP/1.1)."""

    def __init__(self, control_url: str, http: httpx.AsyncClient) -> None:
        self.url = control_url.rstrip("/")
        self._http = http

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            answer = await self._http.request(method, self.url + path, json=body, timeout=5.0)
        except httpx.HTTPError as exc:
            raise SimulatorUnavailableError(f"APNs simulator at {self.url}: {exc}") from exc
        if answer.status_code >= 400:
            raise ValueError(answer.json().get("error", f"HTTP {answer.status_code}"))
        return answer.json()

    async def requests(self, since: int) -> list[dict[str, Any]]:
        """Request records with a sequence number above ``since``, oldest first."""
        records = await self._call("GET", f"/requests?since={since}")
        return [r for r in records if isinstance(r, dict)]

    async def now(self) -> float:
        """The simulator's clock (epoch seconds)."""
        return float((await self._call("GET", "/health"))["now"])

    async def unregister(self, token: str) -> None:
        """Later pushes to ``token`` get 410 Unregistered (timestamp: the simulator's now)."""
        await self._call("POST", "/devices/unregister", {"token": token})

    async def add_fault(self, fault: Mapping[str, Any]) -> str:
        """Arm a fault (camelCase fields); returns its id."""
        return str((await self._call("POST", "/faults", dict(fault)))["id"])

    async def clear_faults(self) -> None:
        """Disarm every fault."""
        await self._call("DELETE", "/faults")

    async def advance(self, seconds: float) -> float:
        """Move the simulator's clock; returns its new now."""
        return float((await self._call("POST", "/clock", {"advanceSeconds": seconds}))["now"])

    async def set_time(self, epoch_seconds: float) -> float:
        """Set the simulator's clock; returns its new now."""
        return float((await self._call("POST", "/clock", {"epochSeconds": epoch_seconds}))["now"])


def _time(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC)


def _times(text: object) -> tuple[datetime, ...]:
    if not isinstance(text, str) or not text:
        return ()
    return tuple(datetime.fromisoformat(part).astimezone(UTC) for part in text.split(","))


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A registered device as the devices table holds it (the key itself is not read)."""

    user_id: str
    device_id: str
    token: str
    kind: str
    topic: str
    environment: str
    has_key: bool
    key_expires_at: datetime | None
    registered_at: datetime | None
    renewed_at: datetime | None
    background_sent: tuple[datetime, ...]
    stale: bool
    unanswered_wakes: int
    last_result: str

    @classmethod
    def from_entity(cls, e: Mapping[str, Any]) -> DeviceRow:
        """From a devices-table entity (see shared/storage/devices.py for the fields)."""
        return cls(
            user_id=decode_key(str(e["PartitionKey"])),
            device_id=decode_key(str(e["RowKey"])),
            token=str(e.get("token", "")).lower(),
            kind=str(e.get("kind", "")),
            topic=str(e.get("topic", "")),
            environment=str(e.get("environment", "")),
            has_key=bool(e.get("previewKey")),
            key_expires_at=_time(e.get("keyExpiresAt")),
            registered_at=_time(e.get("registeredAt")),
            renewed_at=_time(e.get("renewedAt")),
            background_sent=tuple(
                sorted({*_times(e.get("backgroundSent")), *_times(e.get("renewalSent"))})
            ),
            stale=bool(e.get("stale", False)),
            unanswered_wakes=read_int(e.get("unansweredWakes")),
            last_result=str(e.get("lastResult") or ""),
        )

    def live_key(self, now: datetime) -> bool:
        """Whether the app holds a key for this device that is live at ``now``."""
        return self.has_key and self.key_expires_at is not None and now < self.key_expires_at


class AppTables:
    """The app's tables, read (never written) by the console."""

    def __init__(self, storage_connection: str, prefix: str) -> None:
        self._tables = Tables.connect(storage_connection, prefix)

    async def devices(self) -> list[DeviceRow]:
        """Every registered device (a full scan: development only)."""
        table = await self._tables.table(DEVICES_TABLE)
        return [DeviceRow.from_entity(e) async for e in table.list_entities()]

    async def renewal_wakes(self) -> dict[tuple[str, str], datetime]:
        """(user, deviceId) -> the latest bucket the renewal schedule holds for it."""
        table = await self._tables.table(RENEWALS_TABLE)
        latest: dict[tuple[str, str], datetime] = {}
        async for e in table.list_entities(select=["PartitionKey", "RowKey"]):
            try:
                entry = ScheduleEntry.from_keys(str(e["PartitionKey"]), str(e["RowKey"]))
            except ValueError:
                continue
            key, due = (entry.user_id, entry.device_id), bucket_start(entry.bucket)
            if key not in latest or latest[key] < due:
                latest[key] = due
        return latest

    async def deliveries(
        self, user_id: str, thread_id: str, message_id: str
    ) -> list[DeliveryRecord]:
        """The delivery log of one message for one user (one partition query)."""
        store = TableDeliveryStore(await self._tables.table(DELIVERIES_TABLE))
        return await store.history(user_id, thread_id, message_id)

    async def aclose(self) -> None:
        """Close the storage connection."""
        await self._tables.aclose()


def newest_first(rows: Sequence[DeviceRow]) -> list[DeviceRow]:
    """Devices by registration time, newest first."""
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(rows, key=lambda r: r.registered_at or epoch, reverse=True)
