"""Replaying a recording (``jointmon.recording``) through the gateway, as if the sensors were there.

A :class:`ReplayLink` is a :class:`sensor_gateway.link.SensorLink` that delivers one recorded
sensor's notifications with their recorded arrival times, shifted by one constant offset (replay
start - recording start, a whole number of seconds), so the gateway computes the same clock maps and
the same frames: bit for bit in the samples, and in ``t0_ns`` up to that offset.

The links of one recording share a :class:`ReplayPlayer`, which delivers every record in file order:
the gateway then sees the notifications of all sensors interleaved exactly as the live gateway did,
and the link ends (recorded as "end" events) at the same points, so it publishes the same frames in
the same order. ``speed`` paces the delivery (1 = real time, 10 = ten times faster, None = as fast
as possible); the arrival times passed to the gateway do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware_sim.peripheral import wants_arrival_time
from jointmon.errors import LinkError, RecordingError
from jointmon.gatt import CONTROL_CHAR_UUID, CONTROL_START, CONTROL_STOP, IMU_CHAR_UUID, MIC_CHAR_UUID, STATUS_CHAR_UUID
from jointmon.packets import StreamType
from jointmon.recording import Recording
from sensor_gateway.gateway import FramePublisher, Gateway, SensorBinding
from sensor_gateway.link import NotifyCallback, SensorLink
from sensor_gateway.recorder import frames_from_recording

log = logging.getLogger("jointmon.replay")

_CHAR_TO_STREAM = {IMU_CHAR_UUID: "imu", MIC_CHAR_UUID: "mic", STATUS_CHAR_UUID: "status"}
_YIELD_EVERY = 32  # records between event-loop yields at max speed, so the publisher keeps up
_END_ACK_TIMEOUT_S = 10.0  # how long the player waits for the gateway to close a link that ended
SECOND_NS = 1_000_000_000

__all__ = ["ReplayLink", "ReplayPlayer", "ReplayResult", "frames_from_recording", "replay_offset_ns",
           "replay_recording"]


def replay_offset_ns(first_arrival_ns: int, now_ns: int | None = None) -> int:
    """The constant shift from recorded to replayed arrival times: replay start - recording start,
    floored to whole seconds. Whole seconds keep the sample grid, the 20 ms angle buckets and the
    float64 rounding of wall times (any multiple of 512 ns does) exactly as they were recorded."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return (now_ns - first_arrival_ns) // SECOND_NS * SECOND_NS


class ReplayPlayer:
    """Delivers a recording's records in file order to its :class:`ReplayLink` s, paced by ``speed``.

    It starts when every link made from it has been told to START (as the gateway does), and ends
    every link when the records are exhausted. ``position_s`` is how far into the recording (s since
    the first notification) it has delivered; ``counters`` counts delivered and skipped records.
    """

    def __init__(self, recording: Recording, speed: float | None = None, *, offset_ns: int | None = None) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive or None (max), got {speed}")
        self.recording = recording
        self.speed = speed
        self.offset_ns = offset_ns  # None: chosen at start with replay_offset_ns()
        self.links: dict[int, ReplayLink] = {}
        self.position_s = 0.0
        self.counters: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.done = False
        self._task: asyncio.Task[None] | None = None

    @property
    def duration_s(self) -> float:
        return self.recording.duration_s

    def link(self, sensor_index: int) -> ReplayLink:
        """The link of one recorded sensor (one per index)."""
        if sensor_index not in self.links:
            ReplayLink(self.recording, sensor_index, self.speed, player=self)
        return self.links[sensor_index]

    def make_links(self) -> list[ReplayLink]:
        """A link for every recorded sensor, in recording order."""
        return [self.link(s.index) for s in self.recording.sensors]

    def _register(self, link: ReplayLink) -> None:
        if link.sensor_index in self.links:
            raise ValueError(f"sensor {link.sensor_index} already has a replay link")
        self.links[link.sensor_index] = link

    def _started(self) -> None:
        if self._task is None and all(link.started for link in self.links.values()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t_loop0 = loop.time()
        first = self.recording.first_arrival_ns
        since_yield = 0
        try:
            for arrival_ns, index, stream, data in self.recording.packets(link_events=True):
                link = self.links.get(index)
                if link is None or link.gone:
                    self.counters["skipped"] += 1
                    continue
                if stream == "link":
                    if data == b"end":  # the live link ended here: end it here too, and let the gateway flush
                        await link._end(wait_ack=True)
                    continue
                if first is None:
                    first = arrival_ns
                if self.offset_ns is None:
                    self.offset_ns = replay_offset_ns(first)
                if self.speed is not None:
                    delay = t_loop0 + (arrival_ns - first) / 1e9 / self.speed - loop.time()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                        since_yield = 0
                link._deliver(stream, data, arrival_ns + self.offset_ns)
                self.counters["delivered"] += 1
                self.position_s = (arrival_ns - first) / 1e9
                since_yield += 1
                if since_yield >= _YIELD_EVERY:
                    await asyncio.sleep(0)
                    since_yield = 0
        except RecordingError as exc:
            self.error = exc
            log.error("replay stopped: %s", exc)
        finally:
            self.done = True
            for link in self.links.values():
                await link._end(wait_ack=False)


class ReplayLink(SensorLink):
    """One recorded sensor behind the gateway's link interface.

    ``speed``: 1 real time, 10 ten times faster, None as fast as possible. Links sharing a ``player``
    replay together in recorded order; without one, the link replays its sensor alone.
    """

    def __init__(self, recording: Recording, sensor_index: int, speed: float | None = None, *,
                 player: ReplayPlayer | None = None) -> None:
        sensor = recording.sensor(sensor_index)
        self.recording = recording
        self.sensor_index = sensor_index
        self.address = sensor.address
        self.name = sensor.name
        self.player = player if player is not None else ReplayPlayer(recording, speed)
        self.started = False
        self.gone = False
        self._callbacks: dict[str, tuple[Callable[..., None], bool]] = {}
        self._gone = asyncio.Event()
        self._closed = asyncio.Event()  # the gateway called disconnect()
        self.player._register(self)

    def describe(self) -> dict[str, Any]:
        return {**self.recording.sensor(self.sensor_index).info, "replayed_from": str(self.recording.path)}

    @property
    def finished(self) -> bool:
        """The recording of this sensor is played out: the gateway's supervisor stops, not reconnects."""
        return self.gone

    async def connect(self) -> None:
        if self.gone:
            raise LinkError(f"{self.name}: the replay of this sensor has ended")

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        stream = _CHAR_TO_STREAM.get(char_uuid.lower())
        if stream is None:
            raise LinkError(f"{self.name}: characteristic {char_uuid} is not notified in a recording")
        self._callbacks[stream] = (callback, wants_arrival_time(callback))

    async def write(self, char_uuid: str, data: bytes) -> None:
        """The control characteristic: START begins the replay (once every link of the player started)."""
        if char_uuid.lower() != CONTROL_CHAR_UUID or len(data) != 1 or data[0] not in (CONTROL_START, CONTROL_STOP):
            raise LinkError(f"{self.name}: write {data!r} to {char_uuid} rejected (ATT error)")
        if data[0] == CONTROL_START and not self.started:
            self.started = True
            self.player._started()
        elif data[0] == CONTROL_STOP:
            await self._end(wait_ack=False)

    def _deliver(self, stream: str, data: bytes, arrival_ns: int) -> None:
        entry = self._callbacks.get(stream)
        if entry is None:  # not subscribed: a real sensor would not notify it either
            self.player.counters[f"unsubscribed_{stream}"] += 1
            return
        callback, wants_arrival = entry
        if wants_arrival:
            callback(data, arrival_ns)
        else:
            callback(data)

    async def _end(self, *, wait_ack: bool) -> None:
        if self.gone:
            return
        self.gone = True
        self._gone.set()
        if wait_ack:  # the gateway flushes this sensor, then calls disconnect(): keep the recorded order
            try:
                await asyncio.wait_for(self._closed.wait(), _END_ACK_TIMEOUT_S)
            except TimeoutError:
                log.warning("%s: the gateway did not close the link within %.0f s", self.name, _END_ACK_TIMEOUT_S)

    async def wait_disconnected(self) -> None:
        if not self.started:
            raise LinkError(f"{self.name}: never started (no START written to the control characteristic)")
        await self._gone.wait()
        if self.player.error is not None:
            raise LinkError(f"{self.name}: {self.player.error}")

    async def disconnect(self) -> None:
        self._closed.set()
        if not self.gone:
            self.gone = True
            self._gone.set()


@dataclass
class ReplayResult:
    offset_ns: int  # replayed arrival time - recorded arrival time, ns
    records_delivered: int
    gateway_counters: dict[str, int]
    wall_s: float


def replay_bindings(recording: Recording, player: ReplayPlayer) -> list[SensorBinding]:
    """One gateway binding per recorded sensor (athlete, joint, segment as recorded)."""
    bindings = []
    for s in recording.sensors:
        counts = recording.packet_counts.get(s.index, {})
        bindings.append(SensorBinding(player.link(s.index), s.athlete, s.joint, s.segment,
                                      (StreamType.IMU, StreamType.MIC_PCM16), status=counts.get("status", 0) > 0))
    return bindings


def replay_recording(recording: Recording, publisher: FramePublisher, *, speed: float | None = None,
                     offset_ns: int | None = None,
                     on_progress: Callable[[float], None] | None = None) -> ReplayResult:
    """Feed ``recording`` through a gateway into ``publisher`` (e.g. a started MqttPublisher).

    ``on_progress(recording_seconds_delivered)`` is called about 5 times a second. Raises
    :class:`RecordingError` if the file turns out damaged part way.
    """
    player = ReplayPlayer(recording, speed, offset_ns=offset_ns)
    gateway = Gateway(publisher, replay_bindings(recording, player))
    t_start = time.monotonic()

    async def main() -> None:
        run = asyncio.create_task(gateway.run())
        while not run.done():
            if on_progress:
                on_progress(player.position_s)
            await asyncio.wait([run], timeout=0.2)
        await run

    asyncio.run(main())
    if on_progress:
        with contextlib.suppress(Exception):  # a progress display must not fail the replay
            on_progress(recording.duration_s)
    if player.error is not None:
        raise player.error
    return ReplayResult(player.offset_ns or 0, player.counters["delivered"],
                        dict(gateway.counters + gateway.stream_counters()), time.monotonic() - t_start)
