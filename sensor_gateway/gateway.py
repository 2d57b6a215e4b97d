"""The gateway: sensor links in, decoded and time-stamped frames out to MQTT."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jointmon.errors import PacketError
from jointmon.frames import Frame, Gap
from jointmon.gatt import CONTROL_CHAR_UUID, CONTROL_START, STATUS_CHAR_UUID, STREAM_CHAR_UUID
from jointmon.packets import StreamType, decode_packet
from jointmon.ratelimit import RateLimitedLog
from jointmon.topics import DataTopic
from sensor_gateway.clock_map import ClockMap
from sensor_gateway.link import SensorLink
from sensor_gateway.scanner import SensorScanner
from sensor_gateway.stream_assembler import StreamAssembler
from sensor_gateway.supervisor import LinkState, SensorSupervisor, SupervisorSettings

log = logging.getLogger("jointmon.gateway")
STREAM_TOPIC_NAME = {StreamType.IMU: "imu", StreamType.MIC_PCM16: "mic"}
LOW_BATTERY_PCT = 15  # a sensor reporting less than this is warned about (status characteristic)


@dataclass
class SensorBinding:
    """Which athlete, joint and body segment a sensor link belongs to (athlete is a pseudonym).

    ``status``: also subscribe to the sensor's status characteristic (JSON: battery, firmware).
    """

    link: SensorLink
    athlete: str
    joint: str
    sensor: str
    streams: tuple[StreamType, ...] = (StreamType.IMU, StreamType.MIC_PCM16)
    status: bool = False

    @property
    def sensor_id(self) -> str:
        """The sensor's id on the status topic: ``athlete.joint.segment`` (one topic level)."""
        return f"{self.athlete}.{self.joint}.{self.sensor}"


class FramePublisher(Protocol):
    """Where the gateway's frames go: :class:`sensor_gateway.mqtt_publisher.MqttPublisher`, or a stand-in."""

    extra_counters: Counter[str]

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None: ...

    def publish_status(self, state: str) -> None: ...

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        """A gap record of the stream ``topic`` (published just before the frame that resumes it)."""
        ...


@runtime_checkable
class SensorStatusPublisher(Protocol):
    """A publisher that also takes per-sensor status (retained): :class:`MqttPublisher` does."""

    def publish_sensor_status(self, sensor_id: str, state: str, counters: dict[str, int],
                              info: dict[str, Any]) -> None: ...


class GatewayTap(Protocol):
    """Sees every notification before decoding (bad ones too) with the arrival time the gateway used,
    and the link's start and end: :class:`sensor_gateway.recorder.GatewayRecorder`."""

    def attach(self, bindings: Sequence[SensorBinding]) -> None: ...

    def on_notification(self, sensor_index: int, stream: str, arrival_ns: int, data: bytes,
                        link_time: bool) -> None: ...

    def on_link_event(self, sensor_index: int, event: str, t_ns: int) -> None: ...


class SensorDecoder:
    """One sensor's receive path, shared by the live gateway and offline replay: decode each
    notification, check sequence and timing, map the sensor clock, assemble ~50 ms frames.

    ``counters`` (may be shared between sensors) gets ``packets_received`` and ``rejected_<reason>``;
    :meth:`stream_counters` sums the per-stream counters (lost_packets, gap_samples, restarts, ...).
    """

    def __init__(self, athlete: str, joint: str, sensor: str,
                 streams: Sequence[StreamType] = (StreamType.IMU, StreamType.MIC_PCM16), *, name: str = "",
                 counters: Counter[str] | None = None, warn: RateLimitedLog | None = None) -> None:
        self.name = name or f"{athlete}/{joint}/{sensor}"
        self.clock = ClockMap()  # one per sensor: its IMU and microphone share the sensor clock
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._warn = warn or RateLimitedLog(log)
        self.assemblers: dict[StreamType, StreamAssembler] = {}
        self.topics: dict[StreamType, DataTopic] = {}
        for stream in streams:
            label = f"{athlete}/{joint}/{sensor}/{STREAM_TOPIC_NAME[stream]}"
            self.assemblers[stream] = StreamAssembler(stream, self.clock, label)
            self.topics[stream] = DataTopic(athlete, joint, sensor, STREAM_TOPIC_NAME[stream])

    def push(self, expected: StreamType, data: bytes, arrival_ns: int) -> list[tuple[DataTopic, Frame]]:
        """One notification from the ``expected`` stream's characteristic, received at ``arrival_ns``
        (Unix ns); returns the frames it completed. Bad packets are counted and logged, never raised."""
        self.counters["packets_received"] += 1
        try:
            pkt = decode_packet(data)
            if pkt.stream != expected:
                raise PacketError("wrong_stream", f"{pkt.stream.name} packet on the {expected.name} characteristic")
        except PacketError as exc:
            self.counters[f"rejected_{exc.reason}"] += 1
            self._warn.warning(exc.reason, "%s: packet rejected (%s)", self.name, exc)
            return []
        self.counters["packets_decoded"] += 1  # received = decoded + sum of rejected_<reason>
        topic = self.topics[expected]
        return [(topic, frame) for frame in self.assemblers[expected].push(pkt, arrival_ns)]

    def flush(self) -> list[tuple[DataTopic, Frame]]:
        """Frames still pending in every stream (the link ended)."""
        return [(self.topics[s], f) for s, a in self.assemblers.items() for f in a.flush()]

    def take_gaps(self) -> list[tuple[DataTopic, Gap]]:
        """Gap records completed by the last push/flush (each belongs before its stream's next frame)."""
        return [(self.topics[s], g) for s, a in self.assemblers.items() for g in a.take_gaps()]

    def stream_counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for a in self.assemblers.values():
            total.update(a.counters)
        return total


@dataclass
class _SensorState:
    index: int
    binding: SensorBinding
    decoder: SensorDecoder
    last_arrival_ns: int = 0
    status: dict[str, object] = field(default_factory=dict)  # last status JSON from the sensor
    supervisor: SensorSupervisor | None = None
    link_up: bool = False  # between the recorder's "start" and "end" link events
    counters: Counter[str] = field(default_factory=Counter)  # this sensor's supervisor counters
    rate_mark: tuple[float, int] = (0.0, 0)  # (monotonic s, packets) at the last status, for packets/s


class Gateway:
    """Connects every bound sensor, decodes its notifications and publishes ~50 ms frames.

    ``counters`` holds packets received and rejected per reason (``rejected_bad_crc``, ...),
    plus each stream's counters summed over sensors (lost_packets, gap_samples, ...).
    ``recorder`` (optional) sees every notification with its arrival time, for a lossless recording.
    ``scanner`` (optional): the gateway's shared :class:`SensorScanner` (its links wait on it); the gateway
    runs it, adds its counters (``scanner_restarts``, ``unknown_sensors``, ...) to :meth:`health` and lists
    the unknown sensors in its status ``info``. Without ``is_known`` it learns the configured sensors
    from the bindings (their links' address or name).
    """

    def __init__(self, publisher: FramePublisher, bindings: list[SensorBinding],
                 recorder: GatewayTap | None = None, *, supervisor: SupervisorSettings | None = None,
                 status_interval_s: float = 5.0, scanner: SensorScanner | None = None) -> None:
        """``supervisor``: retry/backoff/watchdog timing; ``status_interval_s``: how often (s) the gateway
        and sensor statuses (counters, packets/s, loss %) are published and logged."""
        self.publisher = publisher
        self.scanner = scanner
        if scanner is not None:
            # Zero, not absent, until something happens: "no restarts" is a reading, not a missing one.
            for key in ("scanner_restarts", "unknown_sensors"):
                scanner.counters.setdefault(key, 0)
            if scanner.is_known is None:
                known = {k.lower() for b in bindings for k in (b.link.address, b.link.name)}
                scanner.is_known = lambda address, name: bool({address.lower(), (name or "").lower()} & known)
        self.recorder = recorder
        self.supervisor_settings = supervisor or SupervisorSettings()
        self.status_interval_s = status_interval_s
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedLog(log)
        self._sensors = [
            _SensorState(i, b, SensorDecoder(b.athlete, b.joint, b.sensor, b.streams, name=b.link.name,
                                             counters=self.counters, warn=self._warn))
            for i, b in enumerate(bindings)
        ]
        if recorder is not None:
            recorder.attach(bindings)

    def stream_counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self._sensors:
            total.update(s.decoder.stream_counters())
        return total

    def sensor_status(self) -> dict[str, dict[str, object]]:
        """The last status each sensor notified (battery_pct, fw_version, ...), by link name."""
        return {s.binding.link.name: dict(s.status) for s in self._sensors if s.status}

    def _stamp(self, state: _SensorState, stream: str, data: bytes, arrival_ns: int | None) -> int:
        """The arrival time to use (the link's, or now), passed to the recorder before any decoding."""
        link_time = arrival_ns is not None
        if arrival_ns is None:
            arrival_ns = time.time_ns()
        state.last_arrival_ns = max(state.last_arrival_ns, arrival_ns)
        if state.supervisor is not None:
            state.supervisor.touch()
        if self.recorder is not None:
            self.recorder.on_notification(state.index, stream, arrival_ns, data, link_time)
        return arrival_ns

    def _on_packet(self, state: _SensorState, expected: StreamType, data: bytes, arrival_ns: int | None = None) -> None:
        arrival_ns = self._stamp(state, STREAM_TOPIC_NAME[expected], data, arrival_ns)
        frames = state.decoder.push(expected, data, arrival_ns)
        for topic, gap in state.decoder.take_gaps():  # before the frames: a gap precedes its resuming frame
            self.publisher.publish_gap(topic, gap)
        for topic, frame in frames:
            self.publisher.publish_frame(topic, frame)

    def _on_status(self, state: _SensorState, data: bytes, arrival_ns: int | None = None) -> None:
        self._stamp(state, "status", data, arrival_ns)
        self.counters["status_received"] += 1
        try:
            status = json.loads(data)
            if not isinstance(status, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.counters["rejected_status"] += 1
            self._warn.warning("status", "%s: bad status notification (%s)", state.binding.link.name, exc)
            return
        state.status.update(status)
        battery = status.get("battery_pct")
        if isinstance(battery, int | float) and battery < LOW_BATTERY_PCT:
            self._warn.warning(f"battery-{state.index}", "%s: low battery (%s %%)", state.binding.link.name, battery)

    def _notify_callback(self, state: _SensorState, stream: StreamType | None) -> Callable[..., None]:
        # A named second parameter "arrival_ns" tells links (the simulator, replay) to pass their time.
        if stream is None:
            def on_status(data: bytes, arrival_ns: int | None = None, /) -> None:
                self._on_status(state, data, arrival_ns)
            return on_status

        def on_packet(data: bytes, arrival_ns: int | None = None, /) -> None:
            self._on_packet(state, stream, data, arrival_ns)
        return on_packet

    async def _start_link(self, state: _SensorState) -> None:
        """Connected: subscribe to the streams (and status), then tell the sensor to stream."""
        link = state.binding.link
        for stream in state.binding.streams:
            await link.start_notify(STREAM_CHAR_UUID[stream], self._notify_callback(state, stream))
        if state.binding.status:
            await link.start_notify(STATUS_CHAR_UUID, self._notify_callback(state, None))
        await link.write(CONTROL_CHAR_UUID, bytes([CONTROL_START]))  # sensors stream only when told
        state.link_up = True
        if self.recorder is not None:
            self.recorder.on_link_event(state.index, "start", time.time_ns())

    def _end_link(self, state: _SensorState, reason: str) -> None:
        """The link is gone (dropped, silent, session over): flush what the assemblers hold."""
        if not state.link_up:
            return
        state.link_up = False
        if self.recorder is not None:  # marks where the flush below happened, for an exact replay
            self.recorder.on_link_event(state.index, "end", max(time.time_ns(), state.last_arrival_ns))
        frames = state.decoder.flush()
        for topic, gap in state.decoder.take_gaps():
            self.publisher.publish_gap(topic, gap)
        for topic, frame in frames:
            self.publisher.publish_frame(topic, frame)

    def _sensor_status(self, state: _SensorState) -> tuple[str, dict[str, int], dict[str, Any]]:
        """(state, counters, info gauges) of one sensor for its status topic."""
        sup = state.supervisor
        stream = state.decoder.stream_counters()
        received = int(stream.get("packets", 0))
        lost = int(stream.get("lost_packets", 0))
        now = time.monotonic()
        t0, n0 = state.rate_mark
        state.rate_mark = (now, received)
        info: dict[str, Any] = {
            "packets_per_s": round((received - n0) / (now - t0), 1) if t0 and now > t0 else None,
            "loss_pct": round(100.0 * lost / (received + lost), 3) if received + lost else 0.0,
            "rssi_dbm": state.binding.link.rssi_dbm,
            "battery_pct": state.status.get("battery_pct"),
            "clock_drift_ppm": getattr(state.decoder.clock, "drift_ppm", None),
            "link": state.binding.link.name,
        }
        counters = {**{k: int(v) for k, v in stream.items()}, **dict(state.counters)}
        return (sup.state.value if sup is not None else "stopped"), counters, info

    def publish_sensor_status(self, state: _SensorState) -> None:
        if isinstance(self.publisher, SensorStatusPublisher):
            self.publisher.publish_sensor_status(state.binding.sensor_id, *self._sensor_status(state))

    def _on_state(self, state: _SensorState, new: LinkState) -> None:
        log.info("%s (%s): %s", state.binding.link.name, state.binding.sensor_id, new.value)
        self.publish_sensor_status(state)

    async def _run_sensor(self, state: _SensorState) -> None:
        sup = SensorSupervisor(
            state.binding.link, self.supervisor_settings,
            on_connected=lambda: self._start_link(state),
            on_link_end=lambda reason: self._end_link(state, reason),
            on_state=lambda new: self._on_state(state, new),
            counters=state.counters)
        state.supervisor = sup
        await sup.run()

    def health(self) -> Counter[str]:
        """Every counter: packets received/rejected by reason, stream counters, supervisor recoveries."""
        total = self.counters + self.stream_counters()
        for s in self._sensors:
            total.update(s.counters)
        if self.scanner is not None:
            total.update(self.scanner.counters)  # update, not +: keeps scanner_restarts = 0 visible
        return total

    def _publish_health(self, state: str) -> None:
        self.publisher.extra_counters = self.health()
        if self.scanner is not None and isinstance(getattr(self.publisher, "info", None), dict):
            self.publisher.info["unknown_sensors"] = self.scanner.unknown_list()  # type: ignore[attr-defined]
        self.publisher.publish_status(state)
        for s in self._sensors:
            self.publish_sensor_status(s)

    async def _status_loop(self) -> None:
        """Every ``status_interval_s``: gateway and sensor statuses on MQTT, counters in the log."""
        while True:
            await asyncio.sleep(self.status_interval_s)
            self._publish_health("online")
            log.info("gateway health: %s", dict(sorted(self.extra_health().items())))

    def extra_health(self) -> Counter[str]:
        """The gateway's counters plus the publisher's (published, queued, dropped), for the log."""
        total = self.health()
        total.update(Counter(getattr(self.publisher, "counters", Counter())))  # update, not +: zeros stay visible
        return total

    async def run(self) -> None:
        """Supervise every sensor until all sessions end (simulated/replayed links) or the task is cancelled."""
        status_task = asyncio.create_task(self._status_loop())
        background = [status_task]
        if self.scanner is not None:
            background.append(asyncio.create_task(self.scanner.run()))
        try:
            await asyncio.gather(*(self._run_sensor(s) for s in self._sensors))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._publish_health("online")
