"""The simulated sensor as a real Bluetooth LE peripheral: a Bumble ``Device`` with the GATT server of
docs/protocol.md §1, on a virtual link (tests, ``jointmon simulate --virtual-ble``) or a real HCI
controller (``usb:0``, ``serial:/dev/ttyACM0,1000000``, ...: see :func:`open_ble_sensor`).

The packets come from :class:`firmware_sim.peripheral.SimulatedPeripheral` (the same encoder, link
faults, battery and status as the simulated link); this module is the radio side of the firmware:

* **Advertising** (§1): flags, the jointmon service UUID and the battery in manufacturer data in the
  advertising data, the name in the scan response. Bumble's software controller does not relay scan
  responses over its local link, so a sensor on a *virtual* link also puts its name in the advertising
  data (``name_in_adv_data``; the virtual radio has no 31-byte limit). A sensor advertises while no
  gateway is connected, never while connected, and not while it is off the air (a reboot, out of range).
* **GATT**: the jointmon service (IMU, microphone, status, control), Device Information and Battery.
  ATT MTU up to 247 (the gateway asks for it); START is refused while the MTU cannot hold a packet.
* **Flow**: like firmware, the sensor hands notifications to its BLE stack only while the stack has
  room (the HCI controller's ACL buffers, i.e. the link's flow control), and keeps the rest in a TX
  ring of ``tx_buffer_packets``; a full ring drops its oldest packet, counted per stream
  (``tx_overflow_<stream>``; ``unseen_tx_overflow_<stream>`` those of them overwritten before the stream's
  first notification, which no gateway can see as a gap). Nothing is lost silently: every packet the core
  produced is either notified or counted under one reason (see :attr:`BleSensor.counters`).
* **Control** (write with response, §1): ``0x01`` START, ``0x02`` STOP, and (proposed, compatible
  additions) ``0x03`` + u16 IMU rate Hz + u16 mic rate Hz and ``0x04`` + u8 mic stream type (2 = PCM16,
  3 = IMA ADPCM). Rates and codec are taken while the sampling session has not started (before the
  first START); other writes are refused with an ATT application error (:data:`ATT_ERR_*`).
* **Link faults** (session time, from the scenario's ``[link]``): ``disconnects`` drop the connection
  and keep the sensor off the air (out of range) for the window; ``reboot_at_s`` drops it, keeps the
  sensor off the air for ``REBOOT_OUTAGE_S`` and forgets START (RAM is gone: the gateway must start it
  again); ``drops_at_s`` (here) drop the connection and advertise again at once; ``stalls_at_s`` (here)
  leave it up but send nothing (stuck firmware) until the connection ends (the gateway's silence watchdog).

The sampling session starts at the first START (session time 0) and runs on whether a gateway listens
or not; at its end the sensor disconnects and goes off the air for good (:meth:`BleSensor.wait_finished`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence

import numpy as np
from bumble import att, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.profiles.battery_service import BatteryService
from bumble.profiles.device_information_service import DeviceInformationService
from scipy.signal import resample_poly

from firmware_sim.link_faults import FW_VERSION, REBOOT_OUTAGE_S, LinkFaults
from firmware_sim.peripheral import ADPCM_SAMPLES_PER_PACKET, SimulatedPeripheral
from firmware_sim.session import SensorSignals
from jointmon.gatt import (
    ADV_COMPANY_ID,
    CONTROL_CHAR_UUID,
    CONTROL_START,
    CONTROL_STOP,
    IMU_CHAR_UUID,
    MIC_CHAR_UUID,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
    encode_adv_data,
)
from jointmon.packets import MIC_CODECS

log = logging.getLogger("jointmon.sim.ble")

# Control opcodes beyond START/STOP (docs/protocol.md §1 allows new opcodes as a compatible change).
CONTROL_SET_RATES = 0x03  # + u16 imu_rate_hz + u16 mic_rate_hz (little-endian)
CONTROL_SET_MIC_CODEC = 0x04  # + u8 microphone stream type: 2 = PCM16, 3 = IMA ADPCM
# ATT application errors (0x80..0x9F are the application's) the control characteristic answers with.
ATT_ERR_UNKNOWN_OPCODE = 0x80  # reserved or unknown opcode, or a wrong length for the opcode
ATT_ERR_UNSUPPORTED_VALUE = 0x81  # a rate or codec the sensor cannot do
ATT_ERR_SESSION_RUNNING = 0x82  # rates/codec change after the sampling session started
ATT_ERR_MTU_TOO_SMALL = 0x83  # START while the ATT MTU cannot carry the largest packet

ATT_MTU_MAX = 247  # what the sensor accepts in the MTU exchange (docs/protocol.md §2: 244-byte packets)
MAX_RATE_DIVIDER = 8  # supported rates: the native rate divided by 1..8 (integer results only)
TX_BUFFER_PACKETS = 32  # the firmware's TX ring: ~180 ms of a PCM16 sensor's packets
ADV_INTERVAL_MS = 100.0
DRAIN_TIMEOUT_S = 2.0  # at power-off, how long the sensor waits for its queued packets to go out (wall s)
STREAM_OF_CHAR = {IMU_CHAR_UUID: "imu", MIC_CHAR_UUID: "mic", STATUS_CHAR_UUID: "status"}
SAMPLE_COUNT_BYTE = 10  # packet header byte holding the sample count (docs/protocol.md §2)


def static_address(name: str) -> hci.Address:
    """A random static address derived from the sensor name (stable across runs: the gateway config may
    name it). The two top bits set mark a static random address."""
    h = zlib.crc32(name.encode()).to_bytes(4, "big") + zlib.crc32(name.encode()[::-1]).to_bytes(4, "big")
    raw = bytes([h[0] | 0xC0, *h[1:6]])
    return hci.Address(":".join(f"{b:02X}" for b in raw), hci.Address.RANDOM_DEVICE_ADDRESS)


def advertising_payloads(name: str, battery_pct: int | None, *, name_in_adv_data: bool) -> tuple[bytes, bytes]:
    """(advertising data, scan response) of docs/protocol.md §1: flags, service UUID and battery, and the name
    in the scan response (also in the advertising data when ``name_in_adv_data``)."""
    flags = bytes([AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG])
    fields: list[tuple[int, bytes]] = [
        (AdvertisingData.FLAGS, flags),
        (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, UUID(SERVICE_UUID).to_bytes()),
        (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", ADV_COMPANY_ID) + encode_adv_data(battery_pct)),
    ]
    name_field = (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode())
    adv = bytes(AdvertisingData([*fields, name_field] if name_in_adv_data else fields))
    return adv, bytes(AdvertisingData([name_field]))


def resampled(signals: SensorSignals, imu_rate_hz: int, mic_rate_hz: int) -> SensorSignals:
    """The sensor's streams at other sample rates (integer dividers of the native rates), anti-alias
    filtered as the sensor's own decimation filter would (polyphase FIR)."""

    def decimate(x: np.ndarray, native: int, rate: int) -> np.ndarray:
        if rate == native:
            return x
        y = resample_poly(x.astype(np.float64), 1, native // rate, axis=0)
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)

    return dataclasses.replace(
        signals, imu_rate_hz=imu_rate_hz, mic_rate_hz=mic_rate_hz,
        imu_raw=decimate(signals.imu_raw, signals.imu_rate_hz, imu_rate_hz),
        mic_raw=decimate(signals.mic_raw, signals.mic_rate_hz, mic_rate_hz))


def _rate_ok(native: int, rate: int) -> bool:
    return 0 < rate <= native and native % rate == 0 and native // rate <= MAX_RATE_DIVIDER


class _AttError(att.ATT_Error):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(error_code=code, message=message)


@dataclasses.dataclass
class SessionWorld:
    """What the sensors of one simulated session share: the instant the session's first START switched them all
    on (event-loop time, s). The gateway connects and starts sensors one after another (tens of ms apart); real
    sensors still sample one world at one time, so a sensor started later begins at the shared session time 0 and
    sends what it sampled meanwhile at once. Without it, each sensor's signals started at its own START and the
    same click lay tens of ms apart on the two sensors' wall clocks."""

    t0_loop_s: float | None = None


class BleSensor:
    """One simulated sensor on a Bumble :class:`~bumble.device.Device` (not yet powered on).

    ``signals``, ``faults``, ``speed``, ``clock_offset_us`` and ``seed`` are those of
    :class:`SimulatedPeripheral` (``speed``: real-time multiple of the session; link faults and
    advertising run on the same session clock). ``drops_at_s``: session times at which the sensor drops
    the connection and advertises again at once. ``tx_buffer_packets``: the firmware's TX ring.

    :attr:`counters`: ``produced_<stream>`` (packets the core handed over; ``produced_bytes_<stream>``),
    ``notified_<stream>`` (packets handed to the stack; ``notified_bytes_<stream>``: their
    bytes, without the 3-byte ATT header), ``tx_overflow_<stream>``
    (dropped by the full TX ring), ``unsent_<stream>`` (in the ring when the link went), ``in_flight_lost``
    (held by the controller when the link went), ``mtu_too_small_<stream>``, and packets the core produced
    while nobody could receive them: ``not_connected_<stream>``, ``stalled_<stream>``, ``not_started_<stream>``
    (connected, no START since the connection/boot), ``not_subscribed_<stream>``; plus ``connections``,
    ``disconnects_<reason>``, ``control_<opcode>`` and ``control_rejected``. The core's own losses
    (scenario drops, link-down windows) are in ``core.packets_dropped`` / ``core.packets_link_down``.
    """

    def __init__(self, device: Device, signals: SensorSignals, *, faults: LinkFaults | None = None,
                 speed: float = 1.0, clock_offset_us: int = 0, seed: int = 0,
                 drops_at_s: Sequence[float] = (), stalls_at_s: Sequence[float] = (),
                 tx_buffer_packets: int = TX_BUFFER_PACKETS,
                 name_in_adv_data: bool = False, adv_interval_ms: float = ADV_INTERVAL_MS,
                 world: SessionWorld | None = None) -> None:
        if tx_buffer_packets < 1:
            raise ValueError(f"tx_buffer_packets must be >= 1, got {tx_buffer_packets}")
        self.device = device
        self.name = device.name
        self.signals = signals
        self.faults = faults or LinkFaults()
        self.speed = float(speed)
        self.clock_offset_us = clock_offset_us
        self.seed = seed
        self.drops_at_s = tuple(sorted(drops_at_s))
        self.stalls_at_s = tuple(sorted(stalls_at_s))
        self.stalled = False  # firmware stuck: connected, sends nothing, until the connection ends
        self.tx_buffer_packets = tx_buffer_packets
        self.name_in_adv_data = name_in_adv_data
        self.adv_interval_ms = adv_interval_ms
        self.imu_rate_hz = signals.imu_rate_hz
        self.mic_rate_hz = signals.mic_rate_hz
        self.mic_codec = self.faults.mic_codec
        self.counters: Counter[str] = Counter()
        self.core: SimulatedPeripheral | None = None  # the packet core of the current configuration
        self._core_config: tuple[int, int, str] | None = None
        self.session_started = False
        self.connection: Connection | None = None
        self.streaming = False  # START received on this connection (and boot)
        self.on_air = True  # advertising allowed (False: rebooting, out of range, switched off)
        self.link_events: list[tuple[float, str]] = []  # (session s, event) as the radio saw them
        self._loop_t0: float | None = None  # event loop time of session time 0
        self.world = world  # shared with the session's other sensors: they sample one world from one instant
        self._tx: deque[tuple[str, bytes]] = deque()
        self._tx_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = asyncio.Event()  # off the air for good
        self._off: asyncio.Future[None] | None = None  # the power-off, once begun
        self._status = self._status_json(self.faults.battery_level(0.0))
        self._battery = self.faults.battery_level(0.0)
        self._chars: dict[str, Characteristic] = {}
        self._build_gatt()
        device.on(device.EVENT_CONNECTION, self._on_connection)

    # ------------------------------------------------------------------ GATT server

    def _build_gatt(self) -> None:
        notify = Characteristic.Properties.NOTIFY
        for uuid in (IMU_CHAR_UUID, MIC_CHAR_UUID):
            self._chars[uuid] = Characteristic(uuid, notify, Characteristic.READABLE, b"")
        self._chars[STATUS_CHAR_UUID] = Characteristic(
            STATUS_CHAR_UUID, Characteristic.Properties.READ | notify, Characteristic.READABLE,
            CharacteristicValue(read=lambda _conn: self._status))
        self._chars[CONTROL_CHAR_UUID] = Characteristic(
            CONTROL_CHAR_UUID, Characteristic.Properties.WRITE, Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_control))
        self.battery_service = BatteryService(lambda _conn: self._battery)
        self.device.gatt_server.max_mtu = ATT_MTU_MAX
        self.device.add_services([
            Service(SERVICE_UUID, list(self._chars.values())),
            DeviceInformationService(manufacturer_name="jointmon", model_number="JM-SIM-1",
                                     serial_number=self.name, firmware_revision=FW_VERSION),
            self.battery_service,
        ])

    def _status_json(self, battery_pct: int) -> bytes:
        return json.dumps({"battery_pct": int(battery_pct), "fw_version": FW_VERSION, "imu_rate_hz": self.imu_rate_hz,
                           "mic_rate_hz": self.mic_rate_hz, "mic_codec": self.mic_codec},
                          separators=(",", ":")).encode()

    def max_packet_bytes(self) -> int:
        """Largest notification of the current configuration (reference firmware sizes, docs/protocol.md §2)."""
        mic = 18 + (ADPCM_SAMPLES_PER_PACKET + 1) // 2 if self.mic_codec == "ima_adpcm" else 14 + 2 * 100
        return max(14 + 12 * 10, mic)

    async def _on_control(self, _conn: Connection, value: bytes) -> None:
        """The control characteristic (write with response); an :class:`att.ATT_Error` becomes the ATT error."""
        if not value:
            self.counters["control_rejected"] += 1
            raise _AttError(ATT_ERR_UNKNOWN_OPCODE, "empty control write")
        op = value[0]
        self.counters[f"control_{op:#04x}"] += 1
        try:
            if op == CONTROL_START and len(value) == 1:
                await self._start()
            elif op == CONTROL_STOP and len(value) == 1:
                self.streaming = False
            elif op == CONTROL_SET_RATES and len(value) == 5:
                self._configure(*struct.unpack("<HH", value[1:]), self.mic_codec)
            elif op == CONTROL_SET_MIC_CODEC and len(value) == 2:
                codec = {v: k for k, v in MIC_CODECS.items()}.get(value[1])
                if codec is None:
                    raise _AttError(ATT_ERR_UNSUPPORTED_VALUE, f"unknown microphone stream type {value[1]}")
                self._configure(self.imu_rate_hz, self.mic_rate_hz, codec)
            else:
                raise _AttError(ATT_ERR_UNKNOWN_OPCODE, f"control write {value.hex()}: unknown opcode or length")
        except att.ATT_Error as exc:
            self.counters["control_rejected"] += 1
            log.warning("%s: control write %s refused: %s", self.name, value.hex(), exc)
            raise

    def _configure(self, imu_rate_hz: int, mic_rate_hz: int, codec: str) -> None:
        if self.session_started:
            raise _AttError(ATT_ERR_SESSION_RUNNING, "rates and codec are set before the first START")
        if not (_rate_ok(self.signals.imu_rate_hz, imu_rate_hz) and _rate_ok(self.signals.mic_rate_hz, mic_rate_hz)):
            raise _AttError(ATT_ERR_UNSUPPORTED_VALUE, f"rates {imu_rate_hz}/{mic_rate_hz} Hz: must divide "
                            f"{self.signals.imu_rate_hz}/{self.signals.mic_rate_hz} Hz by 1..{MAX_RATE_DIVIDER}")
        self.imu_rate_hz, self.mic_rate_hz, self.mic_codec = imu_rate_hz, mic_rate_hz, codec
        self._status = self._status_json(self._battery)

    async def _start(self) -> None:
        conn = self.connection
        if conn is not None and conn.att_mtu < self.max_packet_bytes() + 3:
            raise _AttError(ATT_ERR_MTU_TOO_SMALL, f"ATT MTU {conn.att_mtu} < {self.max_packet_bytes() + 3}: "
                            "exchange the MTU first")
        self.streaming = True
        if not self.session_started:  # the first START begins the sampling session (session time 0)
            self.session_started = True
            core = await self._core()
            for uuid, stream in STREAM_OF_CHAR.items():
                await core.start_notify(uuid, self._core_callback(stream))
            t0 = asyncio.get_running_loop().time()
            if self.world is not None:  # the session's first START switched every sensor on
                if self.world.t0_loop_s is None:
                    self.world.t0_loop_s = t0
                t0 = self.world.t0_loop_s
            self._loop_t0 = core.start_loop_s = t0
            self._spawn(self._run_core())
            self._spawn(self._run_link_faults())

    async def _core(self) -> SimulatedPeripheral:
        """The packet core for the current configuration. It encodes the whole session up front (~0.1 s per
        10 s of session): done in a worker thread, so other sensors on this event loop keep streaming."""
        if self.core is None or self._core_config != (self.imu_rate_hz, self.mic_rate_hz, self.mic_codec):
            config = (self.imu_rate_hz, self.mic_rate_hz, self.mic_codec)

            def build() -> SimulatedPeripheral:
                return SimulatedPeripheral(
                    resampled(self.signals, config[0], config[1]), address=str(self.device.random_address),
                    name=self.name, realtime=True, speed=self.speed, clock_offset_us=self.clock_offset_us,
                    seed=self.seed, faults=dataclasses.replace(self.faults, mic_codec=config[2]))

            self.core = await asyncio.to_thread(build)
            self._core_config = config
        return self.core

    def _core_callback(self, stream: str) -> Callable[[bytes], None]:
        def on_packet(data: bytes) -> None:
            self._from_core(stream, data)
        return on_packet

    # ------------------------------------------------------------------ packets: core -> TX ring -> stack

    def session_s(self) -> float:
        """Session time now, s (0 before the first START)."""
        if self._loop_t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._loop_t0) * self.speed

    def _from_core(self, stream: str, data: bytes) -> None:
        self.counters[f"produced_{stream}"] += 1
        self.counters[f"produced_bytes_{stream}"] += len(data)
        if stream == "status":
            self._status = data
            with contextlib.suppress(ValueError, KeyError, TypeError):
                battery = int(json.loads(data)["battery_pct"])
                if battery != self._battery:
                    self._battery = battery
                    self._notify_soon(self.battery_service.battery_level_characteristic)
        conn = self.connection
        reason = ("not_connected" if conn is None else "stalled" if self.stalled
                  else "not_started" if not self.streaming and stream != "status"
                  else "not_subscribed" if not self._subscribed(conn, stream) else "")
        if reason:
            self.counters[f"{reason}_{stream}"] += 1
            return
        if len(self._tx) >= self.tx_buffer_packets:
            old_stream, _ = self._tx.popleft()  # a ring: the oldest goes, as firmware overwrites it
            self.counters[f"tx_overflow_{old_stream}"] += 1
            if not self.counters[f"notified_{old_stream}"]:
                # Before the stream's first notification (a sensor started late catching up on the session): the
                # gateway cannot see these as a sequence gap, so they are counted apart too.
                self.counters[f"unseen_tx_overflow_{old_stream}"] += 1
        self._tx.append((stream, data))
        self._tx_wake.set()

    def _subscribed(self, conn: Connection, stream: str) -> bool:
        char = self._chars[{"imu": IMU_CHAR_UUID, "mic": MIC_CHAR_UUID, "status": STATUS_CHAR_UUID}[stream]]
        cccd = self.device.gatt_server.subscribers.get(conn, {}).get(char.handle)
        return bool(cccd) and cccd[0] & 0x01 != 0

    def _notify_soon(self, char: Characteristic) -> None:
        if self.connection is not None:
            task = asyncio.ensure_future(self.device.notify_subscribers(char))
            self._tasks.append(task)

    async def _send_loop(self, conn: Connection) -> None:
        """Drain the TX ring into the stack while the controller has free ACL buffers (HCI flow control)."""
        queue = self.device.host.le_acl_packet_queue
        uuid_of = {"imu": IMU_CHAR_UUID, "mic": MIC_CHAR_UUID, "status": STATUS_CHAR_UUID}
        flow = asyncio.Event()
        if queue is not None:
            queue.on("flow", flow.set)
        try:
            while self.connection is conn:
                if not self._tx:
                    self._tx_wake.clear()
                    await self._tx_wake.wait()
                    continue
                if queue is not None and queue.pending >= queue.max_in_flight:
                    flow.clear()
                    await flow.wait()  # the controller completed packets: room again
                    continue
                stream, data = self._tx.popleft()
                if len(data) > conn.att_mtu - 3:  # never truncated (Bumble's notify would cut it silently)
                    self.counters[f"mtu_too_small_{stream}"] += 1
                    continue
                # The PDU straight to the bearer: the subscription is checked when queued, and Bumble's
                # notify_subscriber formats every PDU for a debug line (most of its cost at these rates).
                pdu = att.ATT_Handle_Value_Notification(attribute_handle=self._chars[uuid_of[stream]].handle,
                                                        attribute_value=data)
                self.device.gatt_server.send_gatt_pdu(conn, bytes(pdu))
                self.counters[f"notified_{stream}"] += 1
                self.counters[f"notified_bytes_{stream}"] += len(data)
                await asyncio.sleep(0)  # let the stack and the core run between packets
        finally:
            if queue is not None:
                queue.remove_listener("flow", flow.set)

    # ------------------------------------------------------------------ connection, advertising, faults

    def _on_connection(self, conn: Connection) -> None:
        if conn.role != hci.Role.PERIPHERAL:
            return
        self.connection = conn
        self.streaming = False  # a new connection starts idle: the gateway subscribes, then writes START
        self.counters["connections"] += 1
        self.link_events.append((self.session_s(), "connect"))
        conn.on(conn.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(conn, reason))
        self._spawn(self._send_loop(conn))
        log.info("%s: connected to %s", self.name, conn.peer_address)

    def _on_disconnection(self, conn: Connection, reason: int) -> None:
        if self.connection is not conn:
            return
        self.connection = None
        self.streaming = False
        self.stalled = False  # the watchdog's reconnect (or any disconnect) unsticks the firmware
        self._tx_wake.set()  # the sender sees the link gone
        for stream, _ in self._tx:
            self.counters[f"unsent_{stream}"] += 1
        self._tx.clear()
        self.counters[f"disconnects_{hci.HCI_Constant.error_name(reason).lower()}"] += 1
        self.link_events.append((self.session_s(), "disconnect"))
        log.info("%s: disconnected (%s)", self.name, hci.HCI_Constant.error_name(reason))
        if self.on_air and self._off is None:
            self._spawn(self._advertise())

    async def _advertise(self) -> None:
        if not self.on_air or self.connection is not None or self._off is not None:
            return
        adv, scan_rsp = advertising_payloads(self.name, self.faults.battery_level(self.session_s()),
                                             name_in_adv_data=self.name_in_adv_data)
        await self.device.start_advertising(advertising_data=adv, scan_response_data=scan_rsp,
                                            advertising_interval_min=self.adv_interval_ms,
                                            advertising_interval_max=self.adv_interval_ms)

    async def _go_off_air(self, why: str, reason: int) -> None:
        """Stop advertising and drop the connection (``reason``: what the gateway's stack reports)."""
        self.on_air = False
        self.link_events.append((self.session_s(), why))
        await self.device.stop_advertising()
        await self._disconnect(reason, drain=False)

    async def _disconnect(self, reason: int, *, drain: bool) -> None:
        """Close the connection; ``drain``: first let the TX ring and the stack empty (an orderly close), else
        what the controller still holds is lost, counted as ``in_flight_lost``."""
        conn = self.connection
        if conn is None:
            return
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    while self._tx and self.connection is conn:
                        await asyncio.sleep(0.005)
                    await conn.drain()
        queue = self.device.host.le_acl_packet_queue
        if queue is not None and self.connection is conn:
            self.counters["in_flight_lost"] += queue.pending  # one connection per sensor: all of it is this link's
        with contextlib.suppress(Exception):  # the link may be going already
            await conn.disconnect(reason)

    async def _come_back(self, why: str) -> None:
        self.on_air = True
        self.link_events.append((self.session_s(), why))
        await self._advertise()

    async def _sleep_until(self, t_s: float) -> None:
        delay = (t_s - self.session_s()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run_link_faults(self) -> None:
        """Disconnect windows, the reboot and connection drops, on the session clock."""
        timeout = hci.HCI_CONNECTION_TIMEOUT_ERROR  # what a central sees when the sensor vanishes
        events: list[tuple[float, str]] = []
        for start, dur in self.faults.disconnects:
            events += [(start, "out_of_range"), (start + dur, "in_range")]
        if self.faults.reboot_at_s is not None:
            events += [(self.faults.reboot_at_s, "reboot"), (self.faults.reboot_at_s + REBOOT_OUTAGE_S, "boot")]
        events += [(t, "drop") for t in self.drops_at_s] + [(t, "stall") for t in self.stalls_at_s]
        for t, what in sorted(events):
            await self._sleep_until(t)
            if self._off is not None:
                return
            if what in ("out_of_range", "reboot"):
                await self._go_off_air(what, timeout)
            elif what in ("in_range", "boot"):
                await self._come_back(what)
            elif what == "stall":
                self.stalled = self.connection is not None
                self.link_events.append((self.session_s(), "stall"))
            elif self.connection is not None:  # drop: the sensor closes the link, advertises again at once
                self.link_events.append((self.session_s(), "drop"))
                await self._disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR, drain=False)

    async def _run_core(self) -> None:
        assert self.core is not None
        try:
            await self.core.run()
        finally:
            await self._switch_off()

    async def _switch_off(self) -> None:
        """The session is over: off the air for good (once; a second caller waits for the first)."""
        if self._off is None:
            self._off = asyncio.ensure_future(self._power_off())
        await asyncio.shield(self._off)

    async def _power_off(self) -> None:
        self.link_events.append((self.session_s(), "off"))
        try:
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            # Orderly: what is queued goes out before the sensor powers off.
            await self._disconnect(hci.HCI_REMOTE_DEVICE_TERMINATED_CONNECTION_DUE_TO_POWER_OFF_ERROR, drain=True)
        finally:
            self._finished.set()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task failed: %r", self.name, task.exception())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Power on and advertise (the sampling session starts with the first START)."""
        await self.device.power_on()
        await self._core()  # encoded before anyone connects (a START must not stall the other sensors)
        await self._advertise()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        """Return when the sampling session is over and the sensor is off the air."""
        await self._finished.wait()

    async def close(self) -> None:
        """Switch off now (ends the session if it runs) and stop every task."""
        if self.core is not None:
            self.core.stop()
        await self._switch_off()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def lost_packets(self) -> Counter[str]:
        """Packets per stream the gateway cannot have received, by reason (the core's drops included)."""
        out: Counter[str] = Counter()
        for key, n in self.counters.items():
            for reason in ("tx_overflow", "unsent", "not_connected", "stalled", "not_started", "not_subscribed",
                           "in_flight_lost", "mtu_too_small"):
                if key == reason or key.startswith(reason + "_"):
                    out[key] += n
        if self.core is not None:
            for stream, n in self.core.packets_dropped.items():
                out[f"scenario_drop_{stream}"] += n
            for stream, n in self.core.packets_link_down.items():
                out[f"link_down_{stream}"] += n
        return out
