"""One simulated session over a real Bluetooth host stack, in one process: firmware_sim sensors as Bumble GATT
peripherals -> virtual radio -> the gateway's bleak code (``BleakLink``, ``BleakScanSource``) on the Bumble
backend -> MQTT -> analysis -> sinks. The Bluetooth counterpart of :func:`jointmon.live_session.run_session`
(same sensors, names, clocks and analysis), used by the tests and ``bench/ble_throughput.py``.

The gateway is the real one: a shared scanner with its watchdog, one supervisor per sensor (retry, backoff,
silence watchdog). Unlike a simulated link a BLE sensor is never "finished" for the gateway, so the run ends
when every sensor has switched off (its session is over) and every link has gone down (its frames flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware_sim.ble_peripheral import BleSensor
from firmware_sim.bumble_virtual import VirtualBle, ble_sensors_for_session
from firmware_sim.link_faults import LinkFaults
from firmware_sim.session import SimulatedSession
from jointmon.config import MqttSettings
from jointmon.frames import Frame, Gap
from jointmon.messages import JointEvent
from jointmon.topics import DataTopic
from sensor_gateway.bleak_link import BleakLink, BleakScanSource
from sensor_gateway.bumble_backend import BumbleCentral
from sensor_gateway.gateway import FramePublisher, Gateway, SensorBinding
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.scanner import SensorScanner
from sensor_gateway.supervisor import LinkState, SupervisorSettings

if TYPE_CHECKING:  # the analysis is imported only for a run with a sink
    from analysis.knee_pipeline import KneePipeline
    from analysis.result_sink import ResultSink

log = logging.getLogger("jointmon.session.ble")

# Faster reconnects than a gym gateway's defaults: the sessions run faster than real time.
TEST_SUPERVISOR = SupervisorSettings(backoff_initial_s=0.2, backoff_max_s=2.0, silence_s=3.0)


class _PublisherTap:
    """Passes everything to the gateway's publisher and notes each sensor's link state and every gap record."""

    def __init__(self, inner: FramePublisher) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "states", {})  # sensor_id -> last LinkState value
        object.__setattr__(self, "sensor_counters", {})  # sensor_id -> its last status counters
        object.__setattr__(self, "gaps", [])  # (topic, Gap)
        object.__setattr__(self, "changed", asyncio.Event())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:  # extra_counters is set by the gateway
        setattr(self._inner, name, value)

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        self._inner.publish_frame(topic, frame)

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        self.gaps.append((topic, gap))
        self._inner.publish_gap(topic, gap)

    def publish_status(self, state: str) -> None:
        self._inner.publish_status(state)

    def publish_sensor_status(self, sensor_id: str, state: str, counters: dict[str, int],
                              info: dict[str, Any]) -> None:
        self.states[sensor_id] = state
        self.sensor_counters[sensor_id] = dict(counters)
        self.changed.set()
        inner = self._inner
        if hasattr(inner, "publish_sensor_status"):
            inner.publish_sensor_status(sensor_id, state, counters, info)


@dataclass
class BleSessionRun:
    """What happened in one run over Bumble, for summaries and assertions."""

    session_id: str
    samples_generated: dict[str, int]  # "sensor/stream" -> samples the simulator produced
    samples_published: int
    samples_analysed: dict[str, int]
    gateway_counters: dict[str, int]
    analysis_counters: dict[str, int]
    sensor_counters: dict[str, dict[str, int]]  # by segment: BleSensor.counters
    sensor_lost: dict[str, dict[str, int]]  # by segment: BleSensor.lost_packets()
    link_events: dict[str, list[tuple[float, str]]]  # by segment: the sensor's radio events (session s)
    gaps: list[tuple[DataTopic, Gap]]
    gateway_sensor_counters: dict[str, dict[str, int]]  # by segment: the gateway's counters of that sensor
    pipelines: dict[tuple[str, str], KneePipeline]
    events: list[JointEvent] = field(default_factory=list)
    radio_busy_s: float = 0.0  # airtime used, session s
    wall_s: float = 0.0


async def _wait_done(sensors: Mapping[str, BleSensor], tap: _PublisherTap, run: asyncio.Task[None],
                     timeout_s: float) -> None:
    """Until every sensor switched off and no link streams any more (their last frames are flushed)."""
    deadline = time.monotonic() + timeout_s
    await asyncio.wait([asyncio.ensure_future(asyncio.gather(*(s.wait_finished() for s in sensors.values()))), run],
                       timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    while not run.done() and time.monotonic() < deadline:
        if all(s.finished for s in sensors.values()) and \
                not any(v == LinkState.STREAMING.value or v == LinkState.STREAMING for v in tap.states.values()):
            return
        tap.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tap.changed.wait(), 0.2)
    if not run.done():
        log.warning("BLE session did not end within %.0f s", timeout_s)


def run_ble_session(sim: SimulatedSession, mqtt: MqttSettings, sink: ResultSink | None, session_id: str, *,
                    speed: float = 1.0, bytes_per_s: float | None = None,
                    faults: Mapping[str, Any] | Mapping[str, LinkFaults] | None = None,
                    drops_at_s: Mapping[str, tuple[float, ...]] | None = None,
                    stalls_at_s: Mapping[str, tuple[float, ...]] | None = None, tx_buffer_packets: int | None = None,
                    supervisor: SupervisorSettings = TEST_SUPERVISOR, gateway_id: str = "gw-ble",
                    scan_silence_s: float = 5.0, drain_timeout_s: float = 60.0,
                    timeout_s: float | None = None) -> BleSessionRun:
    """Stream ``sim`` through Bumble and the whole pipeline; return once the analysis has everything.

    ``speed``: real-time multiple of the sensors' sessions (and of the virtual radio); ``bytes_per_s``: the
    radio's payload throughput (``firmware_sim.bumble_virtual.PHY_BYTES_PER_S``; None: unlimited);
    ``faults``: a ``[link]`` table or LinkFaults per sensor (else the session's own); ``drops_at_s`` /
    ``stalls_at_s``: connection drops / firmware stalls, per segment (:class:`BleSensor`);
    ``tx_buffer_packets``: the sensors' TX ring (default the firmware's). ``sink`` None: no analysis.
    """
    events: list[JointEvent] = []
    service = None
    if sink is not None:
        from analysis.mqtt_service import AnalysisService

        service = AnalysisService(mqtt, sink, session_id, on_event=events.append)
        service.start()
    publisher = MqttPublisher(mqtt, gateway_id)
    publisher.start()
    tap = _PublisherTap(publisher)
    t_start = time.monotonic()
    timeout_s = timeout_s if timeout_s is not None else sim.duration_s / speed * 3 + 60.0
    result: dict[str, Any] = {}

    async def main() -> None:
        vble = VirtualBle(bytes_per_s=bytes_per_s, speed=speed)
        extra = {} if tx_buffer_packets is None else {"tx_buffer_packets": tx_buffer_packets}
        sensors = ble_sensors_for_session(sim, vble.sensor_device, speed=speed, faults=faults, drops_at_s=drops_at_s,
                                          stalls_at_s=stalls_at_s, **extra)
        for s in sensors.values():
            await s.start()
        central = await BumbleCentral.on_controller(vble.controller("gateway"))
        scanner = SensorScanner(BleakScanSource(backend=central.backend), silence_s=scan_silence_s)
        bindings = [SensorBinding(BleakLink(s.name, backend=central.backend, scanner=scanner), sim.athlete,
                                  sim.joint, segment) for segment, s in sensors.items()]
        gateway = Gateway(tap, bindings, supervisor=supervisor, scanner=scanner)  # type: ignore[arg-type]
        run = asyncio.create_task(gateway.run())
        try:
            await _wait_done(sensors, tap, run, timeout_s)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            for s in sensors.values():
                await s.close()
            await central.close()
        result.update(gateway=gateway, sensors=sensors, bindings=bindings, radio_busy_s=vble.radio.busy_s)

    try:
        asyncio.run(main())
        publisher.wait_acked()
        if service is not None and not service.wait_quiet(timeout_s=drain_timeout_s):
            log.warning("analysis still busy after %.0f s", drain_timeout_s)
    finally:
        publisher.stop()
        if service is not None:
            service.stop()
    gateway: Gateway = result["gateway"]
    sensors: dict[str, BleSensor] = result["sensors"]
    return BleSessionRun(
        session_id=session_id,
        samples_generated={f"{n}/{s}": (sig.imu_raw.shape[0] if s == "imu" else sig.mic_raw.shape[0])
                           for n, sig in sim.sensors.items() for s in ("imu", "mic")},
        samples_published=publisher.counters["samples_published"],
        samples_analysed=dict(service.samples) if service is not None else {},
        gateway_counters=dict(gateway.health()),
        analysis_counters=dict(service.counters) if service is not None else {},
        sensor_counters={k: dict(s.counters) for k, s in sensors.items()},
        sensor_lost={k: dict(s.lost_packets()) for k, s in sensors.items()},
        link_events={k: list(s.link_events) for k, s in sensors.items()},
        gaps=list(tap.gaps),
        gateway_sensor_counters={b.sensor: dict(tap.sensor_counters.get(b.sensor_id, {}))
                                 for b in result["bindings"]},
        pipelines=service.pipelines if service is not None else {},
        events=events,
        radio_busy_s=result["radio_busy_s"],
        wall_s=time.monotonic() - t_start,
    )


def sum_counters(counters: Mapping[str, Mapping[str, int]], prefix: str) -> int:
    """Sum of every counter starting with ``prefix`` over all sensors."""
    return sum(n for c in counters.values() for k, n in Counter(c).items() if k.startswith(prefix))


# ---------------------------------------------------------------------- throughput (bench/ble_throughput.py, tests)

# docs/protocol.md §2 "Bluetooth budget": one sensor's notification payload + 3-byte ATT headers, B/s.
BUDGET_BPS = {"pcm16": 37_460.0, "ima_adpcm": 12_420.0}
ATT_NOTIFY_HEADER_BYTES = 3


def multi_sensor_session(n_sensors: int, duration_s: float, seed: int = 0) -> SimulatedSession:
    """A squat session with ``n_sensors`` sensors (the thigh and shank signals repeated under new segment names:
    the radio does not care what they show)."""
    from firmware_sim.session import simulate_squat_session

    sim = simulate_squat_session(duration_s, seed=seed, n_clicks=0)
    base = [sim.sensors[k] for k in sorted(sim.sensors)]
    sim.sensors = {f"s{i + 1}": base[i % len(base)] for i in range(n_sensors)}
    return sim


@dataclass(frozen=True)
class SensorThroughput:
    """One sensor's notifications over a session, B/s of session time (payload + ATT header)."""

    segment: str
    delivered_bps: float  # what reached the gateway
    produced_bps: float  # what the sensor sampled and packed (its need)
    packets_produced: int
    packets_received: int  # by the gateway
    tx_overflow: int  # dropped by the sensor's full TX ring


def sensor_throughput(run: BleSessionRun, duration_s: float) -> list[SensorThroughput]:
    """Per-sensor throughput of a :func:`run_ble_session` run: sensor-side bytes of what was notified (the
    virtual link loses nothing once notified) and the gateway's packet counts."""
    rows = []
    for seg, c in sorted(run.sensor_counters.items()):
        streams = ("imu", "mic")
        notified = sum(c.get(f"notified_{s}", 0) for s in streams)
        overflow = sum(c.get(f"tx_overflow_{s}", 0) for s in streams)
        sent_bytes = sum(c.get(f"notified_bytes_{s}", 0) for s in streams) + ATT_NOTIFY_HEADER_BYTES * notified
        produced = sum(c.get(f"produced_{s}", 0) for s in streams)
        produced_bytes = sum(c.get(f"produced_bytes_{s}", 0) for s in streams) + ATT_NOTIFY_HEADER_BYTES * produced
        gw = run.gateway_sensor_counters.get(seg, {})
        rows.append(SensorThroughput(seg, sent_bytes / duration_s, produced_bytes / duration_s, produced,
                                     int(gw.get("packets", 0)) + int(gw.get("stale_seq", 0)), overflow))
    return rows
