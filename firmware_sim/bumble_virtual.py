"""A virtual Bluetooth LE radio for the simulated sensors: Bumble software controllers on one link.

One :class:`VirtualBle` is one room with one gateway adapter in it: every controller on it (the sensors'
and the gateway's) shares its **airtime**. Bumble's own controller completes every ACL packet at once
(infinite bandwidth); :class:`VirtualController` instead holds each packet's completion (the HCI flow
control a host sees) and its delivery until the shared radio has carried it, at ``bytes_per_s`` of
application payload (docs/protocol.md §2, "Bluetooth budget": ~97 kB/s on the 1M PHY with DLE, ~175 kB/s
on the 2M PHY; None: unlimited). A sensor whose packets do not fit then fills its TX ring and drops, as
firmware does. It is a throughput model, not a radio model: no connection events, no retransmissions.

Controllers also take 251-byte LE ACL packets (data length extension: one notification = one packet) and
hold 8 of them (a typical controller's buffer count), and cancel a pending connection properly (Bumble's
virtual controller leaves it pending, so a connect to an absent sensor would hang the host).

Wiring:

* one process (tests): :meth:`VirtualBle.sensor_device` for each sensor, :meth:`VirtualBle.controller`
  for the gateway's :class:`sensor_gateway.bumble_backend.BumbleCentral`;
* across processes (``jointmon simulate --virtual-ble`` / ``jointmon gateway --backend bumble``):
  :func:`run_virtual_ble_sensors` serves the gateway's controller as HCI over TCP
  (``tcp-server:127.0.0.1:PORT``); the gateway opens ``tcp-client:127.0.0.1:PORT`` as its HCI
  transport, exactly as it would open ``usb:0`` for a dongle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller
from bumble.device import Device
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from firmware_sim.ble_peripheral import BleSensor, SessionWorld, static_address
from firmware_sim.link_faults import LinkFaults, link_faults_for_sensors
from firmware_sim.session import SimulatedSession
from jointmon.bumble_host import QuietHost

log = logging.getLogger("jointmon.sim.vble")
_controller_log = logging.getLogger("bumble.controller")

LE_ACL_PACKET_BYTES = 251  # data length extension: a 247-byte ATT PDU + 4-byte L2CAP header in one packet
LE_ACL_BUFFERS = 8  # ACL buffers of a typical controller: packets a host may have in flight
L2CAP_HEADER_BYTES = 4  # not counted against the budget, which counts ATT payload + ATT header
PHY_BYTES_PER_S = {"1m": 97_000.0, "2m": 175_000.0}  # docs/protocol.md §2: application throughput per PHY
SIM_CLOCK_OFFSETS_US = {"thigh": 1_234_567, "shank": 7_654_321}  # as jointmon.live_session: clocks start apart


class VirtualRadio:
    """The shared airtime: ``bytes_per_s`` of payload in session time; the session runs ``speed`` x real time,
    so the radio does too. ``busy_s`` sums the airtime used (session seconds)."""

    def __init__(self, bytes_per_s: float | None, speed: float = 1.0) -> None:
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(f"bytes_per_s must be > 0 (or None: unlimited), got {bytes_per_s}")
        self.bytes_per_s = bytes_per_s
        self.speed = speed
        self.busy_s = 0.0
        self.bytes = 0
        self._free_at = 0.0  # event loop time the radio is free again

    def reserve(self, nbytes: int) -> float | None:
        """Book ``nbytes`` of airtime; the event loop time it is carried by (None: unlimited radio)."""
        self.bytes += nbytes
        if self.bytes_per_s is None:
            return None
        now = asyncio.get_running_loop().time()
        air_s = nbytes / self.bytes_per_s
        self.busy_s += air_s
        self._free_at = max(self._free_at, now) + air_s / self.speed
        return self._free_at


class _AirtimeLink(LocalLink):
    """Delivers an ACL PDU when the radio has carried it (the sender's booking), else at once."""

    def send_acl_data(self, sender_controller: Controller, destination_address: hci.Address,
                      transport: Any, data: bytes) -> None:
        done_at = getattr(sender_controller, "booked_until", None)
        if done_at is None:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        asyncio.get_running_loop().call_at(
            done_at, super().send_acl_data, sender_controller, destination_address, transport, data)


class VirtualController(Controller):
    """Bumble's software controller with airtime (see the module docstring) and a working connect cancel."""

    def __init__(self, name: str, *, radio: VirtualRadio, link: LocalLink, **kwargs: Any) -> None:
        super().__init__(name, link=link, **kwargs)
        self.radio = radio
        self.le_acl_data_packet_length = LE_ACL_PACKET_BYTES
        self.total_num_le_acl_data_packets = LE_ACL_BUFFERS
        self.booked_until: float | None = None  # set while one ACL packet from the host is being handled

    def on_hci_acl_data_packet(self, packet: hci.HCI_AclDataPacket) -> None:
        payload = len(packet.data) - (L2CAP_HEADER_BYTES if packet.pb_flag != hci.HCI_ACL_PB_CONTINUATION else 0)
        self.booked_until = self.radio.reserve(max(0, payload))
        try:
            super().on_hci_acl_data_packet(packet)  # forwards the PDU and completes the packet (below)
        finally:
            self.booked_until = None

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        done_at = self.booked_until
        if done_at is not None and isinstance(packet, hci.HCI_Number_Of_Completed_Packets_Event):
            # The host gets its buffer back only once the radio carried the packet: HCI flow control.
            asyncio.get_running_loop().call_at(done_at, self._to_host, packet)
            return
        self._to_host(packet)

    def _to_host(self, packet: hci.HCI_Packet) -> None:
        if _controller_log.isEnabledFor(logging.DEBUG):  # Bumble formats every packet for this line
            Controller.send_hci_packet(self, packet)
        elif self.host:
            asyncio.get_running_loop().call_soon(self.host.on_packet, bytes(packet))

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if _controller_log.isEnabledFor(logging.DEBUG):
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        elif isinstance(packet, hci.HCI_Command):
            self.on_hci_command_packet(packet)
        else:
            super().on_hci_packet(packet)

    def on_hci_reset_command(self, command: hci.HCI_Command) -> hci.HCI_StatusReturnParameters:
        """A reset drops the controller's links (a gateway process restarting on the TCP HCI port): the peers see
        a supervision timeout and advertise again. Bumble's controller keeps them, stale."""
        for conn in list(self.le_connections.values()):
            conn.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False
        return super().on_hci_reset_command(command)

    def on_hci_le_create_connection_cancel_command(self, command: hci.HCI_Command) -> hci.HCI_StatusReturnParameters:
        """Vol 4 Part E 7.8.13: cancel the pending connection; it ends with an LE Connection Complete event
        with status Unknown Connection Identifier (after the Command Complete)."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0, role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address_type, peer_address=pending.peer_address, connection_interval=0,
            peripheral_latency=0, supervision_timeout=0, central_clock_accuracy=0)
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class VirtualBle:
    """One virtual room: a link, its shared radio, and the controllers on it (create inside a running loop).

    ``bytes_per_s``: the radio's payload throughput (:data:`PHY_BYTES_PER_S`, or None: unlimited);
    ``speed``: the sessions' real-time multiple (the radio runs as fast).
    """

    def __init__(self, *, bytes_per_s: float | None = None, speed: float = 1.0) -> None:
        self.link = _AirtimeLink()
        self.radio = VirtualRadio(bytes_per_s, speed)
        self.controllers: list[VirtualController] = []

    def controller(self, name: str, **kwargs: Any) -> VirtualController:
        """A controller on this link (``host_source``/``host_sink``: an HCI transport to serve it on)."""
        ctrl = VirtualController(name, radio=self.radio, link=self.link, **kwargs)
        self.controllers.append(ctrl)
        return ctrl

    def sensor_device(self, name: str) -> Device:
        """A Bumble device (host + controller) for the sensor ``name``, at its static address."""
        ctrl = self.controller(f"sensor-{name}")
        return Device(name=name, address=static_address(name), host=QuietHost(ctrl, AsyncPipeSink(ctrl)))


def ble_sensors_for_session(sim: SimulatedSession, device_for: Callable[[str], Device], *, speed: float = 1.0,
                            faults: Mapping[str, Any] | Mapping[str, LinkFaults] | None = None,
                            drops_at_s: Mapping[str, tuple[float, ...]] | None = None,
                            stalls_at_s: Mapping[str, tuple[float, ...]] | None = None,
                            name_in_adv_data: bool = True, **kwargs: Any) -> dict[str, BleSensor]:
    """One :class:`BleSensor` per sensor of ``sim`` (by segment name), named, clocked and faulted like the simulated
    link's peripherals (``jointmon.live_session.make_peripherals``: JM-SHANK-01, JM-THIGH-02, ...; the same rules,
    kept here so the sensors' process does not import the analysis); ``device_for(name)`` gives each its device.
    ``faults``: a ``[link]`` table or LinkFaults per segment (else the session's own ``link`` table)."""
    drops_at_s, stalls_at_s = drops_at_s or {}, stalls_at_s or {}
    names = sorted(sim.sensors)
    world = SessionWorld()  # one session time 0 for all of them
    table = faults if faults is not None else getattr(sim, "link", None)
    if table and all(isinstance(v, LinkFaults) for v in table.values()):
        per_sensor = {n: table.get(n) or LinkFaults() for n in names}
    else:
        per_sensor = link_faults_for_sensors(table, names)
    return {
        segment: BleSensor(device_for(f"JM-{segment.upper()}-{i:02d}"), sim.sensors[segment],
                           faults=per_sensor[segment], speed=speed,
                           clock_offset_us=SIM_CLOCK_OFFSETS_US.get(segment, 0),
                           seed=int(getattr(sim, "seed", 0)), drops_at_s=drops_at_s.get(segment, ()),
                           stalls_at_s=stalls_at_s.get(segment, ()), name_in_adv_data=name_in_adv_data, world=world,
                           **kwargs)
        for i, segment in enumerate(names, start=1)
    }


def gateway_config_toml(sensors: Mapping[str, BleSensor], sim: SimulatedSession, *, gateway_id: str = "gw-vble",
                        mqtt_url: str = "mqtt://127.0.0.1:1883") -> str:
    """A gateway config (docs/gateway.example.toml) for these sensors, matched by advertised name."""
    lines = ["# written by jointmon simulate --virtual-ble: the simulated sensors of one session",
             "[gateway]", f'id = "{gateway_id}"', f'mqtt_url = "{mqtt_url}"', ""]
    for segment, s in sensors.items():
        lines += ["[[sensors]]", f'match = "{s.name}"', f'athlete = "{sim.athlete}"', f'joint = "{sim.joint}"',
                  f'segment = "{segment}"', ""]
    return "\n".join(lines)


async def run_hci_ble_sensors(sim: SimulatedSession, hci_specs: Mapping[str, str], *, speed: float = 1.0,
                              faults: Mapping[str, Any] | Mapping[str, LinkFaults] | None = None,
                              on_ready: Callable[[dict[str, BleSensor]], None] | None = None) -> VirtualSensorsRun:
    """``jointmon simulate --ble usb:0``: each sensor of ``sim`` on a real HCI controller (segment -> Bumble
    transport spec: ``usb:0``, ``usb:2fe3:000b``, ``serial:/dev/ttyACM0,1000000``, ...), advertising on the air to
    any gateway (BlueZ + bleak on a Raspberry Pi, or ``--backend bumble``). One controller per sensor: a
    controller advertises and takes connections as one device. Returns when every session is over."""
    from bumble.transport import open_transport

    missing = set(sim.sensors) - set(hci_specs)
    if missing:
        raise ValueError(f"no HCI transport for sensor(s) {sorted(missing)} (one controller per sensor)")
    t0 = time.monotonic()
    transports = {seg: await open_transport(spec) for seg, spec in hci_specs.items() if seg in sim.sensors}
    try:
        def device_for(name: str) -> Device:
            seg = next(seg for seg in transports if name.upper().startswith(f"JM-{seg.upper()}-"))
            t = transports[seg]
            return Device(name=name, address=static_address(name), host=QuietHost(t.source, t.sink))

        # A real controller sends scan responses: the name goes there, as docs/protocol.md §1 says.
        sensors = ble_sensors_for_session(sim, device_for, speed=speed, faults=faults, name_in_adv_data=False)
        for s in sensors.values():
            await s.start()
        if on_ready is not None:
            on_ready(sensors)
        try:
            await asyncio.gather(*(s.wait_finished() for s in sensors.values()))
        finally:
            for s in sensors.values():
                await s.close()
        return VirtualSensorsRun(counters={s.name: dict(s.counters) for s in sensors.values()},
                                 lost={s.name: dict(s.lost_packets()) for s in sensors.values()},
                                 wall_s=time.monotonic() - t0)
    finally:
        for t in transports.values():
            with contextlib.suppress(Exception):
                await t.close()


@dataclass
class VirtualSensorsRun:
    """What :func:`run_virtual_ble_sensors` did, per sensor name."""

    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    lost: dict[str, dict[str, int]] = field(default_factory=dict)
    radio_busy_s: float = 0.0
    wall_s: float = 0.0


async def run_virtual_ble_sensors(sim: SimulatedSession, *, hci_spec: str = "tcp-server:127.0.0.1:9601",
                                  speed: float = 1.0, bytes_per_s: float | None = PHY_BYTES_PER_S["2m"],
                                  faults: Mapping[str, Any] | Mapping[str, LinkFaults] | None = None,
                                  on_ready: Callable[[dict[str, BleSensor]], None] | None = None,
                                  start_timeout_s: float | None = None,
                                  linger: Callable[[VirtualSensorsRun], Awaitable[None]] | None = None,
                                  ) -> VirtualSensorsRun:
    """``jointmon simulate --virtual-ble``: the sensors of ``sim`` advertise on a virtual link whose gateway
    adapter is served as HCI on ``hci_spec`` (a Bumble transport; the gateway opens the matching
    ``tcp-client:HOST:PORT``). Returns when every sensor's session is over (each starts at its first START,
    so the sessions wait for a gateway); ``start_timeout_s``: give up if no gateway started them by then.
    ``on_ready(sensors)`` is called once they advertise (print the addresses, write a gateway config);
    ``linger(result)``: awaited after the sessions, while the radio and the gateway's HCI port still run (without
    it the port closes at once and the gateway sees its controller vanish)."""
    t0 = time.monotonic()
    vble = VirtualBle(bytes_per_s=bytes_per_s, speed=speed)
    transport = await open_transport(hci_spec)
    try:
        vble.controller("gateway", host_source=transport.source, host_sink=transport.sink)
        sensors = ble_sensors_for_session(sim, vble.sensor_device, speed=speed, faults=faults)
        for s in sensors.values():
            await s.start()
        log.info("%d virtual BLE sensors advertising; gateway HCI on %s", len(sensors), hci_spec)
        if on_ready is not None:
            on_ready(sensors)
        waits = [asyncio.ensure_future(s.wait_finished()) for s in sensors.values()]
        try:
            if start_timeout_s is not None:
                deadline = time.monotonic() + start_timeout_s
                while not all(s.session_started for s in sensors.values()):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no gateway started the sensors within {start_timeout_s} s")
                    await asyncio.sleep(0.2)
            await asyncio.gather(*waits)
        finally:
            for w in waits:
                w.cancel()
            for s in sensors.values():
                await s.close()
        result = VirtualSensorsRun(counters={s.name: dict(s.counters) for s in sensors.values()},
                                   lost={s.name: dict(s.lost_packets()) for s in sensors.values()},
                                   radio_busy_s=vble.radio.busy_s, wall_s=time.monotonic() - t0)
        if linger is not None:
            await linger(result)
        return result
    finally:
        with contextlib.suppress(Exception):
            await transport.close()
