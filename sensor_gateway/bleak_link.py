"""The real link: a BLE sensor through ``bleak`` (scan by service UUID, connect, start_notify)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import BleakClientWithServiceCache, BleakSlotManager, establish_connection

from jointmon.const import BLE_CONNECT_TIMEOUT_S, BLE_SCAN_TIMEOUT_S
from jointmon.errors import LinkError
from jointmon.gatt import SERVICE_UUID, decode_adv_battery
from sensor_gateway.link import NotifyCallback, SensorLink
from sensor_gateway.scanner import Advertisement, AdvertisementCallback, SensorScanner

if TYPE_CHECKING:
    from sensor_gateway.config import GatewayConfig
    from sensor_gateway.gateway import FramePublisher

log = logging.getLogger("jointmon.gateway.ble")

# Attempts inside one connect(): bleak-retry-connector's default (4) with its per-error backoff; after
# that the gateway's supervisor backs off with jitter and tries again, forever.
BLE_CONNECT_ATTEMPTS = 4


def advertisement_from_bleak(device: BLEDevice, adv: AdvertisementData) -> Advertisement:
    """bleak's (device, advertisement data) as the gateway's :class:`Advertisement` (battery from the
    manufacturer data, docs/protocol.md §1)."""
    return Advertisement(device.address, adv.local_name or device.name, adv.rssi,
                         decode_adv_battery(adv.manufacturer_data), time.monotonic(), device)


class BleakScanSource:
    """The real scan backend: one ``BleakScanner`` filtered on the jointmon service UUID (BlueZ passes
    the filter to the controller, so the gateway is not woken by every phone in the gym)."""

    def __init__(self, *, backend: type | None = None) -> None:
        self._backend = backend
        self._scanner: BleakScanner | None = None

    async def start(self, on_advertisement: AdvertisementCallback) -> None:
        def detected(device: BLEDevice, adv: AdvertisementData) -> None:
            if SERVICE_UUID in adv.service_uuids:  # not every backend applies the filter itself
                on_advertisement(advertisement_from_bleak(device, adv))

        kwargs = {"backend": self._backend} if self._backend else {}
        self._scanner = BleakScanner(detection_callback=detected, service_uuids=[SERVICE_UUID], **kwargs)
        try:
            await self._scanner.start()
        except (BleakError, OSError) as exc:  # BlueZ "InProgress", adapter off or missing
            self._scanner = None
            raise LinkError(f"BLE scan: {exc}") from exc

    async def stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            try:
                await scanner.stop()
            except (BleakError, OSError) as exc:
                raise LinkError(f"BLE scan stop: {exc}") from exc


async def scan_sensors(timeout_s: float = BLE_SCAN_TIMEOUT_S) -> list[Advertisement]:
    """Scan for advertising jointmon sensors for ``timeout_s`` (``--scan``): the latest advertisement of
    each, with RSSI and battery."""
    scanner = SensorScanner(BleakScanSource(), silence_s=max(timeout_s, 1.0))
    task = asyncio.create_task(scanner.run())
    try:
        await asyncio.sleep(timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if scanner.counters["scanner_start_failures"] and not scanner.seen:
        raise LinkError("BLE scan could not start (is Bluetooth on, and is the adapter free?)")
    return list(scanner.seen.values())


async def setup_slot_manager(slots: int) -> BleakSlotManager | None:
    """bleak-retry-connector's slot manager with ``slots`` connections per adapter (``[ble] adapter_slots``).

    Linux/BlueZ only: elsewhere, or without D-Bus, the manager has nothing to watch and None is returned
    (connections are then limited only by the stack). Every adapter BlueZ knows is registered; hci0 if the
    list cannot be read.
    """
    manager = BleakSlotManager()
    await manager.async_setup()
    bluez = getattr(manager, "_manager", None)  # set by async_setup on Linux with BlueZ reachable
    if bluez is None:
        log.info("no BlueZ manager (not Linux, or no D-Bus): adapter slots are not enforced")
        return None
    # The adapter list is not public API; an adapter path is /org/bluez/hciN.
    paths = getattr(bluez, "_properties", {}) or {}
    adapters = sorted({p.split("/")[3] for p in paths if p.count("/") == 3 and p.startswith("/org/bluez/hci")})
    for adapter in adapters or ["hci0"]:
        manager.register_adapter(adapter, slots)
    log.info("adapter slots: %d per adapter on %s", slots, ", ".join(adapters or ["hci0"]))
    return manager


class BleakLink(SensorLink):
    """A sensor found by address or advertised name, connected through bleak with bleak-retry-connector.

    ``establish_connection`` (the connector Home Assistant uses) retries transient BlueZ/ESPHome errors
    inside one ``connect()`` with per-error backoff and clears stale connections; the gateway's
    supervisor paces the attempts around it. ``slot_manager``: a set-up ``BleakSlotManager`` (Linux /
    BlueZ) that refuses a connection when the adapter's slots are full, instead of a late, obscure
    BlueZ failure; the slot is released when the link goes.
    """

    def __init__(self, address_or_name: str, *, backend: type | None = None,
                 slot_manager: BleakSlotManager | None = None, scanner: SensorScanner | None = None) -> None:
        self.scanner = scanner  # the gateway's shared scanner; None: scan for this link alone (one sensor)
        self.address = address_or_name
        self.name = address_or_name
        self._backend = backend
        self._slots = slot_manager
        self._client: BleakClient | None = None
        self._device: BLEDevice | None = None
        self._has_slot = False
        self._rssi: int | None = None
        self._gone = asyncio.Event()
        self._match = address_or_name  # what the config names (self.address becomes the real address)

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
            if self.scanner is not None:  # many sensors: never a second scan next to the shared one (InProgress)
                adv = await self.scanner.wait_for(self._match, BLE_SCAN_TIMEOUT_S)
                device = adv.device if adv is not None else None
                if adv is not None:
                    self._rssi = adv.rssi
            else:
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


async def run_ble_gateway(cfg: GatewayConfig, publisher: FramePublisher) -> None:
    """The real gateway (``jointmon gateway --config``): one shared scanner with its watchdog
    (``[ble] scan_silence_s``), the adapter slot manager (``[ble] adapter_slots``), a :class:`BleakLink`
    per configured sensor, until cancelled (Ctrl-C)."""
    from sensor_gateway.gateway import Gateway, SensorBinding  # the gateway does not need bleak; keep it so

    slots = await setup_slot_manager(cfg.ble.adapter_slots)
    scanner = SensorScanner(BleakScanSource(), silence_s=cfg.ble.scan_silence_s,
                            is_known=lambda address, name: cfg.find(address, name) is not None)
    bindings = [SensorBinding(BleakLink(s.match, slot_manager=slots, scanner=scanner), s.athlete, s.joint,
                              s.segment, status=s.status) for s in cfg.sensors]
    await Gateway(publisher, bindings, supervisor=cfg.supervisor, scanner=scanner).run()
