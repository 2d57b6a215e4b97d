"""The real link: a BLE sensor through ``bleak`` (scan by service UUID, connect, start_notify)."""

from __future__ import annotations

import asyncio
import logging

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import BleakClientWithServiceCache, BleakSlotManager, establish_connection

from jointmon.const import BLE_CONNECT_TIMEOUT_S, BLE_SCAN_TIMEOUT_S
from jointmon.errors import LinkError
from jointmon.gatt import SERVICE_UUID
from sensor_gateway.link import NotifyCallback, SensorLink

log = logging.getLogger("jointmon.gateway.ble")

# Attempts inside one connect(): bleak-retry-connector's default (4) with its per-error backoff; after
# that the gateway's supervisor backs off with jitter and tries again, forever.
BLE_CONNECT_ATTEMPTS = 4


async def scan_sensors(timeout_s: float = BLE_SCAN_TIMEOUT_S) -> list[tuple[BLEDevice, AdvertisementData]]:
    """Scan for advertising jointmon sensors (filtered on the service UUID), strongest first."""
    found = await BleakScanner.discover(timeout=timeout_s, return_adv=True, service_uuids=[SERVICE_UUID])
    return sorted(found.values(), key=lambda d_a: d_a[1].rssi, reverse=True)


class BleakLink(SensorLink):
    """A sensor found by address or advertised name, connected through bleak with bleak-retry-connector.

    ``establish_connection`` (the connector Home Assistant uses) retries transient BlueZ/ESPHome errors
    inside one ``connect()`` with per-error backoff and clears stale connections; the gateway's
    supervisor paces the attempts around it. ``slot_manager``: a set-up ``BleakSlotManager`` (Linux /
    BlueZ) that refuses a connection when the adapter's slots are full, instead of a late, obscure
    BlueZ failure; the slot is released when the link goes.
    """

    def __init__(self, address_or_name: str, *, backend: type | None = None,
                 slot_manager: BleakSlotManager | None = None) -> None:
        self.address = address_or_name
        self.name = address_or_name
        self._backend = backend
        self._slots = slot_manager
        self._client: BleakClient | None = None
        self._device: BLEDevice | None = None
        self._has_slot = False
        self._rssi: int | None = None
        self._gone = asyncio.Event()

    @property
    def rssi_dbm(self) -> int | None:
        return self._rssi

    async def connect(self) -> None:
        wanted = self.address.lower()

        def match(device: BLEDevice, adv: AdvertisementData) -> bool:
            hit = SERVICE_UUID in adv.service_uuids and wanted in (device.address.lower(), (device.name or "").lower())
            if hit:
                self._rssi = adv.rssi
            return hit

        kwargs = {"backend": self._backend} if self._backend else {}
        try:
            device = await BleakScanner.find_device_by_filter(match, timeout=BLE_SCAN_TIMEOUT_S, **kwargs)
            if device is None:
                raise LinkError(f"sensor {self.address!r} not found advertising {SERVICE_UUID}")
            self.address, self.name, self._device = device.address, device.name or device.address, device
            if self._slots is not None and not self._has_slot:
                if not self._slots.allocate_slot(device):
                    raise LinkError(f"{self.name}: no free connection slot on its adapter (raise [ble] adapter_slots "
                                    "only if the adapter really holds more)")
                self._has_slot = True
            self._gone.clear()
            self._client = await establish_connection(
                BleakClientWithServiceCache, device, self.name, disconnected_callback=lambda _c: self._gone.set(),
                max_attempts=BLE_CONNECT_ATTEMPTS, timeout=BLE_CONNECT_TIMEOUT_S, **kwargs)
        except (BleakError, TimeoutError, OSError) as exc:  # BleakOutOfConnectionSlotsError is a BleakError
            self._release_slot()
            raise LinkError(f"connecting to {self.address}: {exc}") from exc
        except LinkError:
            self._release_slot()
            raise
        log.info("connected to %s (%s), RSSI %s dBm", self.name, self.address, self._rssi)

    def _release_slot(self) -> None:
        if self._slots is not None and self._has_slot and self._device is not None:
            self._slots.release_slot(self._device)
        self._has_slot = False

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        if self._client is None:
            raise LinkError("start_notify before connect")

        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            callback(bytes(data))

        try:
            await self._client.start_notify(char_uuid, on_notify)
        except BleakError as exc:
            raise LinkError(f"{self.name}: start_notify {char_uuid}: {exc}") from exc

    async def write(self, char_uuid: str, data: bytes) -> None:
        if self._client is None:
            raise LinkError("write before connect")
        try:
            await self._client.write_gatt_char(char_uuid, data, response=True)
        except BleakError as exc:
            raise LinkError(f"{self.name}: write {char_uuid}: {exc}") from exc

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    async def disconnect(self) -> None:
        if self._client is not None:
            try:
                await self._client.disconnect()
            except (BleakError, TimeoutError) as exc:  # already gone: nothing left to close
                log.debug("disconnect %s: %s", self.name, exc)
        self._release_slot()
        self._gone.set()
