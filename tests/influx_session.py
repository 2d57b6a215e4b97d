"""Write one simulated session through the real analysis into InfluxDB, and say what was written.

For tests that query InfluxDB (the writer's, the dashboards'): a simulated session (knee or shoulder)
runs the whole live path (sensors -> gateway -> MQTT -> analysis service -> InfluxSink) into the
given InfluxDB, with a self-report before the data and interim + final red-flag grades, and the
returned :class:`WrittenSession` holds what went in, so queries can be checked against it::

    from influx_session import write_session
    w = write_session(influxdb1.url, influxdb1.database)            # knee, v1 API
    w.events["click"], w.reps, w.session, w.athlete, w.start_ns, w.end_ns
    ws = write_session(influxdb1.url, influxdb1.database, kind="shoulder", session="s-2")

MQTT: ``mqtt_url`` if given, else an embedded broker (mosquitto if installed, else amqtt) for the run.
Deterministic in what the simulator produces (seeded); the analysis' detections are what they are,
so compare queries with the returned figures, not with constants. A knee session takes ~10 s.

Timestamps: the simulated sensors start at the wall clock and stream faster than real time, so the
data (``start_ns`` .. ``end_ns``) runs up to the session's length (45 s knee, 30 s shoulder) ahead of
the clock when this returns: query with an explicit time range (``time <= end_ns``), not ``now()``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.influx_sink import InfluxSink
from analysis.influx_writer import InfluxWriter
from analysis.mqtt_service import AnalysisService
from analysis.result_sink import FanOut, JointKey
from firmware_sim.scenario import scenario_from_dict
from firmware_sim.session import simulate_session
from jointmon.config import InfluxSettings, MqttSettings
from jointmon.embedded_broker import EmbeddedBroker
from jointmon.frames import Gap
from jointmon.live_session import SessionRun, run_session
from jointmon.messages import JointEvent, JointGrade, SelfReport, Status
from jointmon.topics import DataTopic, reports_topic

# Loaded squats with clicks, dynamic valgus on reps 3-6 and a slightly lossy link (gap records), 45 s.
KNEE_SCENARIO: dict[str, Any] = {
    "seed": 3, "duration_s": 45.0, "athlete": "ath-003", "profile": "tall", "joint": "left_knee",
    "exercise": "loaded_squat", "motion": {"load_kg": 60.0}, "mounting": {"misalignment_deg": 10.0},
    "sounds": {"clicks": 4, "snr_db": 20.0, "click_refractory_s": 3.0},
    "events": {"valgus": {"reps": [3, 4, 5, 6], "magnitude_deg": 14.0, "threshold_deg": 5.0}},
    "link": {"drop_rate": 0.005},
}
# Overhead press, right shoulder, with clicks, 30 s.
SHOULDER_SCENARIO: dict[str, Any] = {
    "seed": 41, "duration_s": 30.0, "athlete": "ath-007", "profile": "medium", "joint": "right_shoulder",
    "exercise": "overhead_press", "mounting": {"misalignment_deg": 8.0},
    "sounds": {"clicks": 3, "click_refractory_s": 3.0, "snr_db": 20.0},
}
SCENARIOS = {"knee": KNEE_SCENARIO, "shoulder": SHOULDER_SCENARIO}


@dataclass
class WrittenSession:
    """What one :func:`write_session` run wrote (through the sink; all times Unix ns, wall clock).

    ``events``: joint_event points per type (click, snap, crepitus, valgus, instability, locking; rep
    excluded: reps are ``reps`` points in ``rep``); ``angle_points``: joint_angle points;
    ``start_ns``/``end_ns``: first and last angle or event time; ``rep_peaks_deg``: peak flexion
    (shoulder: elevation) per rep, in rep order; ``grades``: every grade (interim, then the final);
    ``gaps`` / ``sensor_statuses``: gap records and sensor statuses written; ``writer``: the writer's
    counters after close.
    """

    session: str
    athlete: str
    joint: str
    side: str
    kind: str  # "knee" | "shoulder"
    start_ns: int
    end_ns: int
    angle_points: int
    events: Counter[str]
    reps: int
    rep_peaks_deg: list[float]
    event_list: list[JointEvent]
    grades: list[JointGrade]
    report: SelfReport
    gaps: list[Gap]
    sensor_statuses: list[Status]
    writer: dict[str, int]
    run: SessionRun
    truth_clicks: int = 0  # clicks the simulator injected
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_grade(self) -> JointGrade:
        return next(g for g in reversed(self.grades) if g.final)


class _Tally:
    """A sink next to the InfluxSink that keeps what it was given (the expected contents of InfluxDB)."""

    def __init__(self) -> None:
        self.angle_points = 0
        self.t_min: int | None = None
        self.t_max: int | None = None
        self.events: list[JointEvent] = []
        self.grades: list[JointGrade] = []
        self.reports: list[SelfReport] = []
        self.gaps: list[Gap] = []
        self.statuses: list[Status] = []

    def _see(self, t0: int, t1: int) -> None:
        self.t_min = t0 if self.t_min is None else min(self.t_min, t0)
        self.t_max = t1 if self.t_max is None else max(self.t_max, t1)

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        known = np.zeros(len(t_ns), bool)
        for v in angles.values():
            known |= np.isfinite(np.asarray(v, float))
        self.angle_points += int(known.sum())  # a row with no known angle is not written
        if len(t_ns):
            self._see(int(t_ns[0]), int(t_ns[-1]))

    def event(self, e: JointEvent) -> None:
        self.events.append(e)
        self._see(e.t_ns, e.t_ns)

    def grade(self, g: JointGrade) -> None:
        self.grades.append(g)

    def self_report(self, r: SelfReport) -> None:
        self.reports.append(r)

    def sensor_status(self, s: Status, session: str) -> None:
        if s.component == "sensor" and s.t_ns > 0:
            self.statuses.append(s)

    def gap(self, topic: DataTopic, g: Gap, session: str) -> None:
        self.gaps.append(g)

    def close(self) -> None:
        pass


def write_session(influx: InfluxSettings | str, database: str = "jointmon", *, api: str = "v1",
                  kind: str = "knee", session: str | None = None, mqtt_url: str | None = None,
                  pain: int = 2, swelling: bool = False, grade_interval_s: float = 2.0,
                  scenario: Mapping[str, Any] | None = None, writer: InfluxWriter | None = None,
                  on_progress: Callable[[float], None] | None = None) -> WrittenSession:
    """Run one simulated ``kind`` ("knee" or "shoulder") session through the live analysis into InfluxDB.

    ``influx``: settings, or a URL (then ``database``, ``api`` "v1"/"v2", org "jointmon", token from the
    environment). ``session``: the session id (default ``"{kind}-{time}"``). Before any data the athlete
    reports ``pain`` (0..10) and ``swelling``; interim grades every ``grade_interval_s`` seconds of wall
    time, a final grade at the end. ``scenario``: a scenario table overriding the built-in one.
    ``writer``: the InfluxWriter to use (e.g. with a spool; default: one for ``influx``);
    ``on_progress(streamed_s)``: called ~5 times a second with the session seconds streamed so far.
    Returns once every point is written (the sink is closed); RuntimeError if some were not.
    """
    if kind not in SCENARIOS:
        raise ValueError(f"kind {kind!r}: 'knee' or 'shoulder'")
    settings = influx if isinstance(influx, InfluxSettings) else InfluxSettings.from_env(
        url=influx, api=api, database=database, batch_size=2000, flush_interval_s=0.2)
    sim = simulate_session(scenario_from_dict(dict(scenario or SCENARIOS[kind]), f"influx_session.{kind}"))
    session = session or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = SelfReport(sim.athlete, sim.joint, session, time.time_ns(), pain=pain, swelling=swelling)
    tally = _Tally()
    sink = InfluxSink(settings, writer)
    services: list[AnalysisService] = []

    def progress(streamed_s: float, service: AnalysisService) -> None:
        if on_progress is not None:
            on_progress(streamed_s)
        if not services:  # first call, before the data: the check-in, and interim grades from now on
            services.append(service)
            service.client.publish(reports_topic(sim.athlete, sim.joint), report.to_json(), qos=1).wait_for_publish(5)
            service.grade_interval_s = grade_interval_s

    broker = EmbeddedBroker() if mqtt_url is None else None
    try:
        if broker is not None:
            broker.start()
        run = run_session(sim, MqttSettings.from_url(mqtt_url or broker.url), FanOut(sink, tally), session,
                          realtime=False, on_progress=progress)
    finally:
        if broker is not None:
            broker.stop()
    events = Counter(e.type for e in tally.events if e.type != "rep")
    reps = [e for e in tally.events if e.type == "rep"]
    counters = sink.writer.counters
    if counters["points_written"] != counters["points_received"] + counters["points_resumed"]:
        raise RuntimeError(f"InfluxDB at {settings.url} did not take every point: {counters}")
    return WrittenSession(
        session=session, athlete=sim.athlete, joint=sim.joint, side=sim.joint.split("_", 1)[0],
        kind=kind, start_ns=int(tally.t_min or 0), end_ns=int(tally.t_max or 0), angle_points=tally.angle_points,
        events=events, reps=len(reps), rep_peaks_deg=[e.magnitude for e in reps], event_list=tally.events,
        grades=tally.grades, report=report, gaps=tally.gaps, sensor_statuses=tally.statuses, writer=counters,
        run=run, truth_clicks=sum(1 for lb in sim.labels if lb.type == "click"))
