"""The real link: a BLE sensor through ``bleak`` (scan by service UUID, connect, start_notify)."""

from __future__ import annotations

import asyncio
import logging

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from jointmon.const import BLE_CONNECT_TIMEOUT_S, BLE_SCAN_TIMEOUT_S
from jointmon.errors import LinkError
from jointmon.gatt import SERVICE_UUID
from sensor_gateway.link import NotifyCallback, SensorLink

log = logging.getLogger("jointmon.gateway.ble")


async def scan_sensors(timeout_s: float = BLE_SCAN_TIMEOUT_S) -> list[tuple[BLEDevice, AdvertisementData]]:
    """Scan for advertising jointmon sensors (filtered on the service UUID), strongest first."""
    found = await BleakScanner.discover(timeout=timeout_s, return_adv=True, service_uuids=[SERVICE_UUID])
    return sorted(found.values(), key=lambda d_a: d_a[1].rssi, reverse=True)


class BleakLink(SensorLink):
    """A sensor found by address or advertised name, connected through bleak."""

    def __init__(self, address_or_name: str, *, backend: type | None = None) -> None:
        self.address = address_or_name
        self.name = address_or_name
        self._backend = backend
        self._client: BleakClient | None = None
        self._gone = asyncio.Event()

    async def connect(self) -> None:
        wanted = self.address.lower()

        def match(device: BLEDevice, adv: AdvertisementData) -> bool:
            return SERVICE_UUID in adv.service_uuids and wanted in (device.address.lower(), (device.name or "").lower())

        kwargs = {"backend": self._backend} if self._backend else {}
        try:
            device = await BleakScanner.find_device_by_filter(match, timeout=BLE_SCAN_TIMEOUT_S, **kwargs)
            if device is None:
                raise LinkError(f"sensor {self.address!r} not found advertising {SERVICE_UUID}")
            self.address, self.name = device.address, device.name or device.address
            self._gone.clear()
            self._client = BleakClient(device, disconnected_callback=lambda _c: self._gone.set(),
                                       timeout=BLE_CONNECT_TIMEOUT_S, **kwargs)
            await self._client.connect()
        except (BleakError, TimeoutError, OSError) as exc:
            raise LinkError(f"connecting to {self.address}: {exc}") from exc
        log.info("connected to %s (%s)", self.name, self.address)

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
            except BleakError as exc:  # already gone: nothing left to close
                log.debug("disconnect %s: %s", self.name, exc)
        self._gone.set()
