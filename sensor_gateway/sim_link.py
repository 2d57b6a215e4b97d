"""The simulated link: a firmware_sim peripheral behind the same interface as a BLE sensor.

The peripheral is the sensor: once STARTed it samples and notifies until its session ends, whether
a gateway listens or not. The link is a gate in front of it: connected, notifications pass; dropped
or not yet reconnected, they are lost (and counted here, so tests can check the gap the gateway
reports). :class:`SimLinkFaults` adds the connection faults the gateway's supervisor must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass

from firmware_sim.peripheral import SimulatedPeripheral, wants_arrival_time
from jointmon.errors import LinkError
from jointmon.gatt import (
    CONTROL_CHAR_UUID,
    CONTROL_START,
    CONTROL_STOP,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
    decode_adv_battery,
)
from sensor_gateway.link import NotifyCallback, SensorLink
from sensor_gateway.scanner import Advertisement, AdvertisementCallback, SensorScanner

SAMPLE_COUNT_BYTE = 10  # header byte holding a packet's sample count (docs/protocol.md §2)


@dataclass(frozen=True)
class SimLinkFaults:
    """Connection faults (packet-level faults are :class:`firmware_sim.link_faults.LinkFaults`).

    ``connect_failures``: the first N ``connect()`` calls fail (out of range, adapter busy).
    ``drops_at_s``: session times (s) at which the connection drops; the sensor keeps sampling, what it
    sends until the gateway reconnects is lost. ``stalls_at_s``: session times (s) at which the link goes
    silent but still looks connected (the stuck-stack failure) until the gateway reconnects.
    """

    connect_failures: int = 0
    drops_at_s: tuple[float, ...] = ()
    stalls_at_s: tuple[float, ...] = ()


class SimScanSource:
    """The simulated radio a :class:`SensorScanner` listens to: every ``interval_s`` each peripheral that
    is advertising (not connected) is "heard" with its RSSI (``rssi_dbm``: by address, default -60).

    :meth:`stall` reproduces the field failure the scanner watchdog exists for: the scan goes silent
    without an error until it is stopped and started again. ``starts`` counts (re)starts.
    """

    def __init__(self, peripherals: list[SimulatedPeripheral], *, interval_s: float = 0.05,
                 rssi_dbm: dict[str, int] | None = None) -> None:
        self.peripherals = peripherals
        self.interval_s = interval_s
        self.rssi_dbm = rssi_dbm or {}
        self.starts = 0
        self.stalled = False
        self._task: asyncio.Task[None] | None = None

    def stall(self) -> None:
        """Stop delivering advertisements, silently, until the next :meth:`start`."""
        self.stalled = True

    async def start(self, on_advertisement: AdvertisementCallback) -> None:
        await self.stop()
        self.starts += 1
        self.stalled = False
        self._task = asyncio.create_task(self._advertise(on_advertisement))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _advertise(self, on_advertisement: AdvertisementCallback) -> None:
        t0 = time.monotonic()
        while True:
            if not self.stalled:
                for p in self.peripherals:
                    if not p.advertising:
                        continue
                    ad = p.advertisement(time.monotonic() - t0)
                    if SERVICE_UUID not in ad["service_uuids"]:  # the real scanner filters on it too
                        continue
                    on_advertisement(Advertisement(ad["address"], ad["name"], self.rssi_dbm.get(p.address, -60),
                                                   decode_adv_battery(ad["manufacturer_data"]), time.monotonic()))
            await asyncio.sleep(self.interval_s)


class SimLink(SensorLink):
    """Streams a :class:`SimulatedPeripheral`'s session; the link is finished when the session is.

    ``scanner``: connect only once the shared scanner has seen the sensor advertise (as the BLE link
    does); without one the sensor is taken as in range.
    """

    def __init__(self, peripheral: SimulatedPeripheral, faults: SimLinkFaults | None = None, *,
                 scanner: SensorScanner | None = None, scan_timeout_s: float = 10.0) -> None:
        self.peripheral = peripheral
        self.scanner = scanner
        self.scan_timeout_s = scan_timeout_s
        self._rssi: int | None = None
        self.address = peripheral.address
        self.name = peripheral.name
        self.faults = faults or SimLinkFaults()
        self._task: asyncio.Task[None] | None = None
        self._subscribers: dict[str, tuple[NotifyCallback, bool]] = {}
        self._gated: set[str] = set()  # characteristics the gate is subscribed to on the peripheral
        self._open = False  # notifications pass
        self._stalled = False
        self._gone = asyncio.Event()
        self._connect_failures_left = self.faults.connect_failures
        self._drops = sorted(self.faults.drops_at_s)
        self._stalls = sorted(self.faults.stalls_at_s)
        self.lost: Counter[str] = Counter()  # packets and samples lost at the gate: "packets", "samples"
        self.connections = 0

    @property
    def finished(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def rssi_dbm(self) -> int | None:
        return self._rssi

    async def connect(self) -> None:
        if self.finished:
            raise LinkError(f"{self.name}: session over, sensor gone")
        if self._connect_failures_left > 0:
            self._connect_failures_left -= 1
            raise LinkError(f"{self.name}: simulated connection failure (not advertising)")
        if self.scanner is not None:
            adv = await self.scanner.wait_for(self.address, self.scan_timeout_s)
            if adv is None:
                raise LinkError(f"{self.name}: not seen advertising for {self.scan_timeout_s} s")
            self._rssi = adv.rssi
        self.peripheral.advertising = False  # a connected sensor stops advertising, like the firmware
        self._gone = asyncio.Event()
        self._stalled = False
        self.connections += 1

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        """Subscribe; callbacks that take an arrival time get the peripheral's (fast mode)."""
        key = char_uuid.lower()
        self._subscribers[key] = (callback, wants_arrival_time(callback))
        if key not in self._gated:
            self._gated.add(key)
            await self.peripheral.start_notify(char_uuid, self._gate(key))

    def _session_s(self, arrival_ns: int | None) -> float:
        start = self.peripheral.start_wall_ns or time.time_ns()
        if arrival_ns is not None:  # fast mode: the peripheral's own session clock
            return (arrival_ns - start) / 1e9
        return (time.time_ns() - start) / 1e9 * self.peripheral.speed

    def _gate(self, key: str) -> NotifyCallback:
        def gate(data: bytes, arrival_ns: int | None = None, /) -> None:
            if self._drops or self._stalls:
                t = self._session_s(arrival_ns)
                while self._drops and self._drops[0] <= t:
                    self._drops.pop(0)
                    if self._open:
                        self._open = False
                        self._gone.set()
                while self._stalls and self._stalls[0] <= t:
                    self._stalls.pop(0)
                    self._stalled = True
            entry = self._subscribers.get(key)
            if not self._open or self._stalled or entry is None:
                if key != STATUS_CHAR_UUID and len(data) > SAMPLE_COUNT_BYTE:
                    self.lost["packets"] += 1
                    self.lost["samples"] += data[SAMPLE_COUNT_BYTE]
                return
            callback, wants_arrival = entry
            if wants_arrival:
                callback(data, arrival_ns)
            else:
                callback(data)
        return gate

    def describe(self) -> dict[str, object]:
        """Sensor facts for a recording's metadata (rates, ranges, clock offset, simulated faults)."""
        return {"simulated": True, **self.peripheral.describe()}

    async def write(self, char_uuid: str, data: bytes) -> None:
        """The control characteristic: START begins streaming (like the firmware), STOP ends it."""
        if char_uuid.lower() != CONTROL_CHAR_UUID or len(data) != 1 or data[0] not in (CONTROL_START, CONTROL_STOP):
            raise LinkError(f"{self.name}: write {data!r} to {char_uuid} rejected (ATT error)")
        if data[0] == CONTROL_START:
            if self._task is None:
                self._task = asyncio.create_task(self.peripheral.run())
                self._task.add_done_callback(lambda _t: self._gone.set())
            self._open = True
        elif data[0] == CONTROL_STOP:
            self.peripheral.stop()

    async def wait_disconnected(self) -> None:
        if self._task is None:
            raise LinkError(f"{self.name}: never started (no START written to the control characteristic)")
        if self.finished:
            return
        await self._gone.wait()

    async def disconnect(self) -> None:
        """Drop the connection; the sensor keeps sampling (its notifications are lost until reconnected)."""
        self._open = False
        self._subscribers.clear()
        self._gone.set()
        self.peripheral.advertising = not self.finished  # disconnected: it advertises again, until its session ends

    async def close(self) -> None:
        """End the sensor's session (the gateway stops)."""
        await self.disconnect()
        self.peripheral.stop()
        self.peripheral.advertising = False  # switched off for good
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
