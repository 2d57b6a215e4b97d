"""Run one simulated session live: firmware_sim sensors -> gateway -> MQTT broker -> analysis -> sinks.

Used by ``jointmon demo`` and by the end-to-end tests, so both exercise the same wiring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.knee_pipeline import KneePipeline, KneeSettings
from analysis.mqtt_service import AnalysisService
from analysis.result_sink import ResultSink
from firmware_sim.link_faults import LinkFaults, link_faults_for_sensors
from firmware_sim.peripheral import SimulatedPeripheral
from firmware_sim.session import SimulatedSession
from jointmon.config import MqttSettings
from jointmon.messages import JointEvent, JointGrade
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.recorder import GatewayRecorder, labels_from_session, session_meta, truth_from_session
from sensor_gateway.sim_link import SimLink

log = logging.getLogger("jointmon.session")

# Each simulated sensor's clock starts at a different arbitrary value, as real sensors' do.
SIM_CLOCK_OFFSETS_US = {"thigh": 1_234_567, "shank": 7_654_321}


@dataclass
class SessionRun:
    """What happened in one live run, for summaries and assertions."""

    session_id: str
    samples_generated: dict[str, int]  # "sensor/stream" -> samples the simulator produced
    samples_published: int
    samples_analysed: dict[str, int]  # "athlete/joint/sensor/stream" -> samples the analysis received
    gateway_counters: dict[str, int]
    analysis_counters: dict[str, int]
    pipelines: dict[tuple[str, str], KneePipeline]
    events: list[JointEvent] = field(default_factory=list)
    wall_s: float = 0.0
    grades: list[JointGrade] = field(default_factory=list)  # the final red-flag grade of each joint


def make_peripherals(sim: SimulatedSession, *, realtime: bool, speed: float = 1.0,
                     drop_packets: dict[str, Sequence[tuple[str, int]]] | None = None,
                     faults: Mapping[str, Any] | Mapping[str, LinkFaults] | None = None,
                     ) -> dict[str, SimulatedPeripheral]:
    """One peripheral per simulated sensor. Link faults come from ``faults`` (a ``[link]`` table, or
    LinkFaults per sensor name) or else the session's own ``link`` table, if it has one; random faults
    are seeded by the session seed and the sensor name."""
    drop_packets = drop_packets or {}
    names = sorted(sim.sensors)
    table = faults if faults is not None else getattr(sim, "link", None)
    if table and all(isinstance(v, LinkFaults) for v in table.values()):
        per_sensor = {n: table.get(n) or LinkFaults() for n in names}
    else:
        per_sensor = link_faults_for_sensors(table, names)
    return {
        name: SimulatedPeripheral(sig, address=f"SIM:{i:02X}", name=f"JM-{name.upper()}-{i:02d}", realtime=realtime,
                                  speed=speed, clock_offset_us=SIM_CLOCK_OFFSETS_US.get(name, 0),
                                  drop_packets=drop_packets.get(name, ()), faults=per_sensor[name],
                                  seed=int(getattr(sim, "seed", 0)))
        for i, (name, sig) in enumerate(sorted(sim.sensors.items()), start=1)
    }


def run_session(sim: SimulatedSession, mqtt: MqttSettings, sink: ResultSink, session_id: str, *,
                realtime: bool = True, speed: float = 1.0, gateway_id: str = "gw-sim",
                drop_packets: dict[str, Sequence[tuple[str, int]]] | None = None,
                knee_settings: KneeSettings | None = None,
                on_progress: Callable[[float, AnalysisService], None] | None = None,
                drain_timeout_s: float = 60.0, recorder: GatewayRecorder | None = None,
                grade_interval_s: float | None = None) -> SessionRun:
    """Stream ``sim`` through the whole pipeline and return once the analysis has everything.

    ``on_progress(session_seconds_streamed, service)`` is called about 5 times a second.
    ``recorder`` taps the gateway (every notification, losslessly); it gets the session's labels,
    truth and metadata too, and the caller closes it. ``grade_interval_s``: the analysis also publishes
    interim red-flag grades this often (s) while the session runs (for a live view).
    """
    events: list[JointEvent] = []
    service = AnalysisService(mqtt, sink, session_id, knee_settings=knee_settings, on_event=events.append,
                              grade_interval_s=grade_interval_s)
    service.start()
    publisher = MqttPublisher(mqtt, gateway_id)
    publisher.start()
    peripherals = make_peripherals(sim, realtime=realtime, speed=speed, drop_packets=drop_packets)
    bindings = [SensorBinding(SimLink(p), sim.athlete, sim.joint, name, status=recorder is not None)
                for name, p in peripherals.items()]
    gateway = Gateway(publisher, bindings, recorder=recorder)
    rate = next(iter(sim.sensors.values())).mic_rate_hz
    t_start = time.monotonic()
    start_ns = time.time_ns()
    for p in peripherals.values():  # one session clock for every sensor: label times map to one wall time
        p.start_wall_ns = start_ns
    if recorder is not None:
        recorder.update_meta(**session_meta(sim), gateway_id=gateway_id, t0_wall_ns=start_ns, realtime=realtime)
        recorder.set_labels(labels_from_session(sim))
        recorder.set_truth(truth_from_session(sim))

    async def main() -> None:
        run = asyncio.create_task(gateway.run())
        while not run.done():
            if on_progress:
                streamed = min(p.samples_sent["mic"] for p in peripherals.values()) / rate
                on_progress(streamed, service)
            await asyncio.wait([run], timeout=0.2)
        await run

    try:
        asyncio.run(main())
        if recorder is not None:  # real time: each peripheral noted when it really started
            recorder.update_meta(t0_wall_ns=min(p.start_wall_ns or start_ns for p in peripherals.values()))
        publisher.wait_acked()
        if not service.wait_quiet(timeout_s=drain_timeout_s):
            log.warning("analysis still busy after %.0f s", drain_timeout_s)
        if on_progress:
            on_progress(sim.duration_s, service)
    finally:
        publisher.stop()
        service.stop()
    return SessionRun(
        session_id=session_id,
        samples_generated={f"{n}/{s}": (sig.imu_raw.shape[0] if s == "imu" else sig.mic_raw.shape[0])
                           for n, sig in sim.sensors.items() for s in ("imu", "mic")},
        samples_published=publisher.counters["samples_published"],
        samples_analysed=dict(service.samples),
        gateway_counters=dict(gateway.counters + gateway.stream_counters()),
        analysis_counters=dict(service.counters),
        pipelines=service.pipelines,
        events=events,
        wall_s=time.monotonic() - t_start,
        grades=[g for g in service.grades if g.final],
    )
