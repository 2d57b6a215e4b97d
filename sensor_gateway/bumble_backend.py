"""A bleak backend on Google's Bumble host stack: the gateway's own bleak code over any HCI controller Bumble
opens (a USB dongle ``usb:0``, a serial HCI board, ``tcp-client:HOST:PORT`` to a virtual link).

bleak takes a backend class per role (``BleakScanner(backend=...)``, ``BleakClient(backend=...)``). Here both
roles share one :class:`BumbleCentral`, a powered-on Bumble ``Device`` in the central role: one controller is
one adapter, opened once and shared by the gateway's scanner and all its links (an earlier attempt upstream,
bleak PR 1681, opened the transport in each scanner and client, so the two could not live side by side).
:meth:`BumbleCentral.backend` is a single class bound to that central which builds the scanner or the client
from the arguments bleak passes (``BleakLink`` hands the same ``backend=`` to its scanner and its client)::

    central = await BumbleCentral.open("usb:0")
    link = BleakLink("JM-THIGH-01", backend=central.backend, scanner=scanner)

Scanner: advertisements with RSSI, name, service UUIDs, manufacturer and service data. Client: connect (one LE
connection attempt at a time per controller, as controllers require), ATT MTU exchange (247), discovery of
services, characteristics and descriptors, read/write (characteristics and descriptors), start/stop_notify,
and the disconnected callback on an unsolicited disconnection. No pairing (the sensors do not bond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid as uuid_mod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble import att, core, hci
from bumble.core import AdvertisingData, PhysicalTransport
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic

from jointmon.bumble_host import QuietHost
from jointmon.errors import LinkError
from sensor_gateway.bleak_link import BleakLink, BleakScanSource
from sensor_gateway.scanner import Advertisement as SensorAdvertisement
from sensor_gateway.scanner import SensorScanner

if TYPE_CHECKING:
    from bumble.controller import Controller

    from sensor_gateway.config import GatewayConfig
    from sensor_gateway.gateway import FramePublisher

log = logging.getLogger("jointmon.gateway.bumble")

ATT_MTU = 247  # asked for in the MTU exchange: 244-byte notifications (docs/protocol.md §2)
CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"
_PROPERTY_NAMES = {
    Characteristic.Properties.BROADCAST: "broadcast", Characteristic.Properties.READ: "read",
    Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    Characteristic.Properties.WRITE: "write", Characteristic.Properties.NOTIFY: "notify",
    Characteristic.Properties.INDICATE: "indicate",
    Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}


def uuid_str(u: core.UUID) -> str:
    """A Bumble UUID as bleak writes it: the full lower-case 128-bit form."""
    return str(uuid_mod.UUID(bytes=bytes(reversed(u.to_bytes(force_128=True)))))


def advertisement_data(adv: Advertisement) -> AdvertisementData:
    """bleak's ``AdvertisementData`` of one Bumble advertisement (AD structures parsed as bleak's backends do)."""
    name: str | None = None
    uuids: list[str] = []
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    tx_power: int | None = None
    uuid_lists = {
        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
        AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
        AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
        AdvertisingData.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    }
    service_data_sizes = {AdvertisingData.SERVICE_DATA_16_BIT_UUID: 2, AdvertisingData.SERVICE_DATA_32_BIT_UUID: 4,
                          AdvertisingData.SERVICE_DATA_128_BIT_UUID: 16}
    for ad_type, value in adv.data.ad_structures:
        value = bytes(value)
        if ad_type == AdvertisingData.COMPLETE_LOCAL_NAME or (ad_type == AdvertisingData.SHORTENED_LOCAL_NAME
                                                              and name is None):
            name = value.decode("utf-8", errors="replace")
        elif ad_type in uuid_lists:
            size = uuid_lists[ad_type]
            for i in range(0, len(value) - size + 1, size):
                u = uuid_str(core.UUID.from_bytes(value[i:i + size]))
                if u not in uuids:  # a scan response may repeat the list
                    uuids.append(u)
        elif ad_type == AdvertisingData.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
            manufacturer[struct.unpack_from("<H", value)[0]] = value[2:]
        elif ad_type in service_data_sizes and len(value) >= service_data_sizes[ad_type]:
            size = service_data_sizes[ad_type]
            service_data[uuid_str(core.UUID.from_bytes(value[:size]))] = value[size:]
        elif ad_type == AdvertisingData.TX_POWER_LEVEL and len(value) == 1:
            tx_power = struct.unpack("<b", value)[0]
    return AdvertisementData(local_name=name, manufacturer_data=manufacturer, service_data=service_data,
                             service_uuids=uuids, tx_power=tx_power, rssi=adv.rssi, platform_data=(adv,))


class BumbleCentral:
    """A Bumble ``Device`` in the central role shared by a gateway's scanner and links (see the module doc).

    Make one with :meth:`open` (an HCI transport spec) or :meth:`on_controller` (a controller in this process,
    e.g. :meth:`firmware_sim.bumble_virtual.VirtualBle.controller`); :meth:`close` powers it off.
    """

    def __init__(self, device: Device, transport: Any = None) -> None:
        self.device = device
        self._transport = transport
        self._listeners: dict[Callable[[Advertisement], None], bool] = {}  # callback -> active scan
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()  # controllers take one LE create-connection at a time
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        self.transport_lost = False  # no HCI command can be answered any more: skip them when closing
        terminated = getattr(getattr(transport, "source", None), "terminated", None)
        if terminated is not None:
            terminated.add_done_callback(lambda _f: setattr(self, "transport_lost", True))
        central = self

        class BumbleBackend:
            """bleak backend class bound to this central: a scanner or a client, from bleak's arguments."""

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
                if args and isinstance(args[0], BLEDevice | str):
                    return BumbleClient(central, *args, **kwargs)
                return BumbleScanner(central, *args, **kwargs)

        self.backend: type = BumbleBackend

    @classmethod
    async def open(cls, hci_spec: str, *, name: str = "jointmon-gateway") -> BumbleCentral:
        """Open the HCI transport ``hci_spec`` (``usb:0``, ``serial:/dev/ttyACM0,1000000``, ``hci-socket:0``,
        ``tcp-client:127.0.0.1:9601``, ...; see Bumble's transport docs) and power the controller on."""
        from bumble.transport import open_transport

        try:
            transport = await open_transport(hci_spec)
        except Exception as exc:  # a missing dongle, a refused TCP port: Bumble raises many kinds
            raise LinkError(f"Bumble HCI transport {hci_spec!r}: {exc}") from exc
        device = Device(name=name, address=hci.Address.generate_static_address(),
                        host=QuietHost(transport.source, transport.sink))
        central = cls(device, transport)
        try:
            await device.power_on()
        except Exception as exc:
            await central.close()
            raise LinkError(f"Bumble controller on {hci_spec!r} did not power on: {exc}") from exc
        return central

    @classmethod
    async def on_controller(cls, controller: Controller, *, name: str = "jointmon-gateway") -> BumbleCentral:
        """A central on a controller in this process (a virtual link), powered on."""
        from bumble.transport.common import AsyncPipeSink

        device = Device(name=name, address=hci.Address.generate_static_address(),
                        host=QuietHost(controller, AsyncPipeSink(controller)))
        await device.power_on()
        return cls(device)

    async def wait_transport_lost(self) -> None:
        """Return if the HCI transport goes away (a dongle unplugged, the virtual radio's process ended); never
        for a controller in this process."""
        terminated = getattr(getattr(self._transport, "source", None), "terminated", None)
        if terminated is None:
            await asyncio.Event().wait()
        else:
            await asyncio.shield(terminated)

    async def close(self) -> None:
        """Disconnect everything, power off, close the transport."""
        if not self.transport_lost:
            with contextlib.suppress(Exception):
                await self.device.power_off()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()

    # ------------------------------------------------------------------ scanning, shared by bleak scanners

    def _on_advertisement(self, adv: Advertisement) -> None:
        for callback in list(self._listeners):
            callback(adv)

    async def add_scan_listener(self, callback: Callable[[Advertisement], None], active: bool = True) -> None:
        """Deliver advertisements to ``callback``; the controller scans while anyone listens."""
        async with self._scan_lock:
            self._listeners[callback] = active
            want_active = any(self._listeners.values())
            if self.device.scanning and self.device.scanning_is_passive == want_active:
                await self.device.stop_scanning()  # an active scanner joined passive ones: rescan actively
            if not self.device.scanning:
                await self.device.start_scanning(active=want_active, filter_duplicates=False)

    async def remove_scan_listener(self, callback: Callable[[Advertisement], None]) -> None:
        async with self._scan_lock:
            self._listeners.pop(callback, None)
            if not self._listeners and self.device.scanning and not self.transport_lost:
                await self.device.stop_scanning()


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend on a :class:`BumbleCentral` (made by ``BumbleCentral.backend``)."""

    def __init__(self, central: BumbleCentral, detection_callback: Any = None, service_uuids: list[str] | None = None,
                 scanning_mode: str = "active", **_kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._central = central
        self._active = scanning_mode != "passive"

    async def start(self) -> None:
        self.seen_devices = {}
        try:
            await self._central.add_scan_listener(self._on_advertisement, self._active)
        except (core.BaseBumbleError, hci.HCI_Error) as exc:
            raise BleakError(f"Bumble scan start: {exc}") from exc

    async def stop(self) -> None:
        await self._central.remove_scan_listener(self._on_advertisement)

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = adv.address.to_string(False)
        device = self.create_or_update_device(address, address, data.local_name,
                                              {"source": "bumble", "address": adv.address}, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    """bleak client backend on a :class:`BumbleCentral` (made by ``BumbleCentral.backend``).

    A ``BLEDevice`` from :class:`BumbleScanner` carries the address type; a bare address string is taken as a
    random (static) address, what BLE sensors use.
    """

    def __init__(self, central: BumbleCentral, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = 10.0,
                 **_kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._central = central
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        if isinstance(details, dict) and isinstance(details.get("address"), hci.Address):
            self._peer_address: hci.Address = details["address"]
        else:
            self._peer_address = hci.Address(self.address, hci.Address.RANDOM_DEVICE_ADDRESS)
        self._name = (address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None) \
            or self.address
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._closing = False
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            log.info("%s: pairing not supported by the Bumble backend; connecting without", self._name)
        timeout = min(self._timeout, float(kwargs.get("timeout", self._timeout)))
        device = self._central.device
        async with self._central.connect_lock:
            try:
                # The outer limit guards against a controller that never answers the cancel.
                async with asyncio.timeout(timeout + 5.0):
                    conn = await device.connect(self._peer_address, transport=PhysicalTransport.LE, timeout=timeout)
            except (core.TimeoutError, TimeoutError) as exc:
                raise TimeoutError(f"{self._name}: no connection within {timeout:.1f} s") from exc
            except (core.BaseBumbleError, hci.HCI_Error) as exc:
                raise BleakError(f"{self._name}: connect failed: {exc}") from exc
        self._closing = False
        self._connection = conn
        conn.on(conn.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(conn, reason))
        try:
            self._peer = Peer(conn)
            await self._peer.request_mtu(ATT_MTU)
            self.services = await self._discover(self._peer)
        except (core.BaseBumbleError, att.ATT_Error, hci.HCI_Error, TimeoutError) as exc:
            await self.disconnect()
            raise BleakError(f"{self._name}: MTU exchange / service discovery failed: {exc}") from exc
        if self._connection is None:  # dropped during discovery
            raise BleakError(f"{self._name}: disconnected during service discovery")

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services():
            bs = BleakGATTService(service, service.handle, uuid_str(service.uuid))
            collection.add_service(bs)
            for char in await service.discover_characteristics():
                props = [n for flag, n in _PROPERTY_NAMES.items() if char.properties & flag]
                bc = BleakGATTCharacteristic(char, char.handle, uuid_str(char.uuid), props,  # type: ignore[arg-type]
                                             lambda: self.mtu_size - 3, bs)
                collection.add_characteristic(bc)
                for desc in await char.discover_descriptors():
                    collection.add_descriptor(BleakGATTDescriptor(desc, desc.handle, uuid_str(desc.type), bc))
        return collection

    def _on_disconnection(self, conn: Connection, reason: int) -> None:
        if self._connection is not conn:
            return
        self._connection = None
        self._peer = None
        self._subscriptions.clear()
        log.info("%s: disconnected (%s)", self._name, hci.HCI_Constant.error_name(reason))
        if not self._closing and self._disconnected_callback is not None:
            self._disconnected_callback()  # unsolicited only, as bleak's backends do

    async def disconnect(self) -> None:
        conn = self._connection
        if conn is None:
            return
        self._closing = True
        try:
            await conn.disconnect()
        except (core.BaseBumbleError, hci.HCI_Error) as exc:
            log.debug("%s: disconnect: %s", self._name, exc)
        finally:
            self._connection = None
            self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("the Bumble backend does not pair")

    async def unpair(self) -> None:
        raise NotImplementedError("the Bumble backend does not pair")

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"{self._name}: not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        return await self._read(characteristic.handle)

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        return await self._read(descriptor.handle)

    async def _read(self, handle: int) -> bytearray:
        try:
            return bytearray(await self._require_peer().read_value(handle))
        except (att.ATT_Error, core.BaseBumbleError) as exc:
            raise BleakError(f"{self._name}: read handle {handle:#06x}: {exc}") from exc

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        await self._write(characteristic.handle, bytes(data), response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        await self._write(descriptor.handle, bytes(data), True)

    async def _write(self, handle: int, data: bytes, response: bool) -> None:
        try:
            await self._require_peer().write_value(handle, data, with_response=response)
        except (att.ATT_Error, core.BaseBumbleError) as exc:
            raise BleakError(f"{self._name}: write handle {handle:#06x}: {exc}") from exc

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        peer = self._require_peer()
        proxy = characteristic.obj
        if characteristic.handle in self._subscriptions:
            raise BleakError(f"{self._name}: notifications on {characteristic.uuid} already started")

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        try:
            await peer.subscribe(proxy, on_value, prefer_notify=True)
        except (att.ATT_Error, core.BaseBumbleError) as exc:
            raise BleakError(f"{self._name}: start_notify {characteristic.uuid}: {exc}") from exc
        self._subscriptions[characteristic.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require_peer()
        on_value = self._subscriptions.pop(characteristic.handle, None)
        try:
            await peer.unsubscribe(characteristic.obj, on_value)
        except (att.ATT_Error, core.BaseBumbleError) as exc:
            raise BleakError(f"{self._name}: stop_notify {characteristic.uuid}: {exc}") from exc


# ---------------------------------------------------------------------- the gateway on Bumble


def bumble_links(central: BumbleCentral, cfg: GatewayConfig, scanner: SensorScanner) -> list[BleakLink]:
    """The configured sensors' links, with the bleak code of the real gateway and the Bumble backend."""
    return [BleakLink(s.match, backend=central.backend, scanner=scanner) for s in cfg.sensors]


async def run_bumble_gateway(cfg: GatewayConfig, publisher: FramePublisher, hci_spec: str) -> None:
    """``jointmon gateway --backend bumble --hci SPEC``: :func:`sensor_gateway.bleak_link.run_ble_gateway` with
    the Bumble backend on the controller at ``hci_spec`` (no BlueZ slot manager: Bumble owns the controller)."""
    from sensor_gateway.gateway import Gateway, SensorBinding

    central = await BumbleCentral.open(hci_spec)
    try:
        scanner = SensorScanner(BleakScanSource(backend=central.backend), silence_s=cfg.ble.scan_silence_s,
                                is_known=lambda address, name: cfg.find(address, name) is not None)
        bindings = [SensorBinding(link, s.athlete, s.joint, s.segment, status=s.status)
                    for link, s in zip(bumble_links(central, cfg, scanner), cfg.sensors, strict=True)]
        run = asyncio.create_task(Gateway(publisher, bindings, supervisor=cfg.supervisor, scanner=scanner).run())
        lost = asyncio.create_task(central.wait_transport_lost())
        try:
            await asyncio.wait([run, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, lost):
                task.cancel()
            await asyncio.gather(run, lost, return_exceptions=True)
        if lost.done() and not lost.cancelled():  # no controller, no gateway: exit, let the service manager restart
            raise LinkError(f"Bumble HCI transport {hci_spec!r} lost (controller unplugged or its process ended)")
        run.result()
    finally:
        await central.close()


async def scan_bumble(hci_spec: str, timeout_s: float) -> list[SensorAdvertisement]:
    """``jointmon gateway --backend bumble --hci SPEC --scan``: advertising jointmon sensors (latest of each)."""
    central = await BumbleCentral.open(hci_spec)
    try:
        scanner = SensorScanner(BleakScanSource(backend=central.backend), silence_s=max(timeout_s, 1.0))
        task = asyncio.create_task(scanner.run())
        try:
            await asyncio.sleep(timeout_s)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return list(scanner.seen.values())
    finally:
        await central.close()
