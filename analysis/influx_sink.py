"""Analysis results as InfluxDB points, through :class:`InfluxWriter`: the schema of docs/influxdb-schema.md.

Measurements: ``joint_angle`` (50 Hz), ``joint_event`` (sounds, valgus, instability, locking), ``rep``,
``session_summary``, ``grade``, ``self_report``, ``sensor_health``, ``gap`` and ``pipeline_health``.

Two things are only known after a point was first written, and the point is then written again
with the same series and timestamp (InfluxDB keeps one point and merges its fields):

* the rep an event happened in: an event decided while its rep is still going gets ``rep`` when the
  rep completes; the rep's sound counts (``clicks``, ``snaps``, ``crepitus``) grow when a sound
  inside a completed rep is decided late;
* ``session_summary``: one point per joint and session at the session's start, rewritten at every
  grade and at close.

A rep here is the interval ``[start, start + duration]`` of a rep event; an event outside every rep
has no ``rep`` field. (The pipeline's own ``details.rep`` of a sound counts a sound between reps to
the next rep; it stays in ``details``.)
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.influx_writer import FieldValue, InfluxWriter, line, lines_from_arrays
from analysis.result_sink import JointKey
from jointmon.config import InfluxSettings
from jointmon.frames import Gap
from jointmon.messages import GRADES, JointEvent, JointGrade, SelfReport, Status
from jointmon.ratelimit import RateLimitedLog
from jointmon.topics import DataTopic

log = logging.getLogger("jointmon.influx")

ANGLE_MEASUREMENT = "joint_angle"
EVENT_MEASUREMENT = "joint_event"
REP_MEASUREMENT = "rep"
SUMMARY_MEASUREMENT = "session_summary"
GRADE_MEASUREMENT = "grade"
REPORT_MEASUREMENT = "self_report"
SENSOR_MEASUREMENT = "sensor_health"
GAP_MEASUREMENT = "gap"
HEALTH_MEASUREMENT = "pipeline_health"

SOUND_FIELDS = {"click": "clicks", "snap": "snaps", "crepitus": "crepitus"}  # event type -> rep/summary count field
SUMMARY_COUNTS = {"click": "clicks", "snap": "snaps", "crepitus": "crepitus", "valgus": "valgus_episodes",
                  "instability": "instability", "locking": "locking", "rep": "reps"}
# Where an event's flexion (shoulder: elevation) at the event is in its details, first match wins.
FLEXION_DETAILS = ("flexion_deg", "flexion_at_peak_deg")
REASON_SEPARATOR = " | "  # between a grade's reasons (line protocol cannot carry newlines)
SENSOR_INFO_FIELDS = ("rssi_dbm", "battery_pct", "loss_pct", "packets_per_s", "clock_drift_ppm")
RECENT_REPS = 64  # completed reps kept per joint to place late events in (a backfilled valgus is <= 30 s late)
MAX_PENDING = 2000  # events waiting for their rep per joint; beyond, the oldest get no rep field


def side_of(joint: str) -> str | None:
    """``left`` / ``right`` from a joint name like ``left_knee``; None when the name has no side."""
    side = joint.split("_", 1)[0]
    return side if side in ("left", "right") else None


def joint_tags(athlete: str, joint: str, session: str) -> dict[str, str | None]:
    """The tags every joint measurement carries."""
    return {"athlete": athlete, "joint": joint, "side": side_of(joint), "session": session}


def _float(x: object) -> float | None:
    """A finite float, or None (not a number, NaN, inf, bool): InfluxDB has no NaN, and a field keeps one type."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _int(x: object) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating) or not math.isfinite(x):
        return None
    return int(x)


def _json(details: Mapping[str, Any]) -> str:
    """Details as compact JSON with NaN/inf as null (JSON has no NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(dict(details)), separators=(",", ":"), default=str)


@dataclass
class _Rep:
    index: int
    t_start_ns: int
    t_end_ns: int
    tags: dict[str, str | None]
    fields: dict[str, FieldValue]


@dataclass
class _Pending:
    """An event written before its rep was known: rewritten with ``rep`` once the rep completes."""

    type: str
    t_ns: int
    tags: dict[str, str | None]
    fields: dict[str, FieldValue]


@dataclass
class _Joint:
    """What the sink remembers of one (athlete, joint, session)."""

    start_ns: int | None = None  # first angle sample or event seen (the session's start for this joint), Unix ns
    first_ns: int | None = None  # first record of any kind (a self-report before the data), Unix ns
    last_ns: int | None = None  # last angle sample seen
    counts: Counter[str] = field(default_factory=Counter)
    roms: list[float] = field(default_factory=list)
    peak_valgus_deg: float | None = None
    reps: list[_Rep] = field(default_factory=list)  # the last RECENT_REPS completed reps
    pending: list[_Pending] = field(default_factory=list)  # events after the last completed rep
    last_rep_end_ns: int | None = None
    duration_s: float | None = None  # analysed duration from the last grade, s
    last_grade_ns: int | None = None  # time of the last grade point written
    summary_fresh: bool = False  # the summary point is up to date

    def see(self, t_ns: int, data: bool = True) -> None:
        """A record at ``t_ns``; ``data``: an angle or event (else a report or grade)."""
        self.first_ns = t_ns if self.first_ns is None else min(self.first_ns, t_ns)
        if data:
            self.start_ns = t_ns if self.start_ns is None else min(self.start_ns, t_ns)


class InfluxSink:
    """A :class:`~analysis.result_sink.RecordSink` writing the schema of docs/influxdb-schema.md to InfluxDB
    1.x or 2.x (the writer: batches, retries, the spool). ``counters``: records it could not turn into points
    (``dropped_<reason>``)."""

    def __init__(self, settings: InfluxSettings, writer: InfluxWriter | None = None, *,
                 host: str | None = None, check: bool = True) -> None:
        """``check``: ask the server at once (:meth:`InfluxWriter.check`): rejected credentials or a missing
        database raise :class:`~jointmon.errors.ConfigError` now; an unreachable server is only logged."""
        self.writer = writer or InfluxWriter(settings)
        if check:
            try:
                self.writer.check()
            except Exception:
                self.writer.close(timeout_s=1.0)
                raise
        self.host = host or socket.gethostname()
        self.counters: Counter[str] = Counter()
        self._joints: dict[tuple[str, str, str], _Joint] = {}
        self._lock = threading.Lock()
        self._warn = RateLimitedLog(log)

    def _joint(self, athlete: str, joint: str, session: str) -> _Joint:
        return self._joints.setdefault((athlete, joint, session), _Joint())

    def _drop(self, reason: str, detail: object) -> None:
        self.counters[f"dropped_{reason}"] += 1
        self._warn.warning(reason, "InfluxDB sink: dropped a record (%s): %s", reason, detail)

    # --- angles and events ------------------------------------------------------------------
    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        t = np.asarray(t_ns, np.int64)
        if not angles or not t.size:
            return
        with self._lock:
            j = self._joint(key.athlete, key.joint, key.session)
            j.see(int(t[0]))
            j.last_ns = int(t[-1]) if j.last_ns is None else max(j.last_ns, int(t[-1]))
            j.summary_fresh = False
        self.writer.write(lines_from_arrays(ANGLE_MEASUREMENT, joint_tags(key.athlete, key.joint, key.session),
                                            {k: np.asarray(v, float) for k, v in angles.items()}, t))

    def event(self, e: JointEvent) -> None:
        with self._lock:
            j = self._joint(e.athlete, e.joint, e.session)
            j.see(e.t_ns)
            j.counts[e.type] += 1
            j.summary_fresh = False
            lines = self._rep(j, e) if e.type == "rep" else self._event(j, e)
        self.writer.write(lines)

    def _event(self, j: _Joint, e: JointEvent) -> list[str]:
        tags = {**joint_tags(e.athlete, e.joint, e.session), "type": e.type}
        fields: dict[str, FieldValue] = {"sensor": e.sensor, "confidence": float(e.confidence),
                                         "magnitude": float(e.magnitude), "stream_t_s": float(e.stream_t_s),
                                         "details": _json(e.details)}
        flexion = next((f for k in FLEXION_DETAILS if (f := _float(e.details.get(k))) is not None), None)
        if flexion is not None:
            fields["flexion_deg"] = flexion
        if (duration := _float(e.details.get("duration_s"))) is not None:
            fields["duration_s"] = duration
        out = []
        rep = next((r for r in reversed(j.reps) if r.t_start_ns <= e.t_ns <= r.t_end_ns), None)
        if rep is not None:  # inside a completed rep: known now (a late decision or a backfill)
            fields["rep"] = rep.index
            if e.type in SOUND_FIELDS:
                key = SOUND_FIELDS[e.type]
                rep.fields[key] = int(rep.fields.get(key, 0)) + 1
                out.append(line(REP_MEASUREMENT, rep.tags, rep.fields, rep.t_start_ns))  # rewrite with the count
        elif j.last_rep_end_ns is None or e.t_ns > j.last_rep_end_ns:  # may be inside a rep still going
            j.pending.append(_Pending(e.type, e.t_ns, tags, fields))
            if len(j.pending) > MAX_PENDING:
                del j.pending[0]
        out.append(line(EVENT_MEASUREMENT, tags, fields, e.t_ns))
        return out

    def _rep(self, j: _Joint, e: JointEvent) -> list[str]:
        d = e.details
        index = _int(d.get("rep")) or j.counts["rep"]
        duration = _float(d.get("duration_s")) or 0.0
        end_ns = e.t_ns + round(duration * 1e9)
        tags = joint_tags(e.athlete, e.joint, e.session)  # exercise: not known to the analysis (absent)
        fields: dict[str, FieldValue] = {"index": index, "duration_s": duration, "peak_flexion_deg": float(e.magnitude)}
        for key in ("rom_deg", "peak_valgus_deg", "fppa_deg"):
            if (v := _float(d.get(key))) is not None:
                fields[key] = v
        out = []
        inside = [p for p in j.pending if e.t_ns <= p.t_ns <= end_ns]
        sounds = Counter(SOUND_FIELDS[p.type] for p in inside if p.type in SOUND_FIELDS)
        fields.update({k: int(sounds.get(k, 0)) for k in SOUND_FIELDS.values()})
        for p in inside:  # rewrite each with its rep, now known
            p.fields["rep"] = index
            out.append(line(EVENT_MEASUREMENT, p.tags, p.fields, p.t_ns))
        j.pending = [p for p in j.pending if p.t_ns > end_ns]
        j.last_rep_end_ns = end_ns if j.last_rep_end_ns is None else max(j.last_rep_end_ns, end_ns)
        j.reps.append(_Rep(index, e.t_ns, end_ns, tags, fields))
        del j.reps[:-RECENT_REPS]
        if "rom_deg" in fields:
            j.roms.append(float(fields["rom_deg"]))
        if "peak_valgus_deg" in fields:
            pv = float(fields["peak_valgus_deg"])
            j.peak_valgus_deg = pv if j.peak_valgus_deg is None else max(j.peak_valgus_deg, pv)
        out.append(line(REP_MEASUREMENT, tags, fields, e.t_ns))
        return out

    # --- grades, summaries, self-reports ----------------------------------------------------
    def grade(self, g: JointGrade) -> None:
        with self._lock:
            j = self._joint(g.athlete, g.joint, g.session)
            j.see(g.t_ns, data=False)
            if (d := _float(g.figures.get("duration_s"))) is not None:
                j.duration_s = d
            fields: dict[str, FieldValue] = {"grade": g.grade, "level": GRADES.index(g.grade), "final": bool(g.final),
                                             "reasons": REASON_SEPARATOR.join(r.text for r in g.reasons)}
            if (pain := _int(g.figures.get("pain"))) is not None:
                fields["pain"] = pain
            if isinstance(g.figures.get("swelling"), bool):
                fields["swelling"] = g.figures["swelling"]
            # At the data time the grade covers (the joint's last angle sample), so that it falls inside the
            # session's time range also when a recording is replayed later; the grading time if no data.
            # Each grade is its own point: >= 1 ms after the previous one (the final grade often follows an
            # interim one with no new data between; 1 ms, as VictoriaMetrics keeps ms).
            t = j.last_ns if j.last_ns is not None else g.t_ns
            if j.last_grade_ns is not None:
                t = max(t, j.last_grade_ns + 1_000_000)
            j.last_grade_ns = t
            lines = [line(GRADE_MEASUREMENT, joint_tags(g.athlete, g.joint, g.session), fields, t)]
            if j.start_ns is not None:  # before any data the session's start is not known: the summary waits
                lines.append(self._summary_line((g.athlete, g.joint, g.session), j))
        self.writer.write(lines)

    def _summary_line(self, key: tuple[str, str, str], j: _Joint) -> str:
        athlete, joint, session = key
        duration = j.duration_s
        if duration is None:
            duration = (j.last_ns - j.start_ns) / 1e9 if j.last_ns is not None and j.start_ns is not None else 0.0
        fields: dict[str, FieldValue] = {"duration_s": float(duration)}
        fields.update({name: int(j.counts.get(t, 0)) for t, name in SUMMARY_COUNTS.items()})
        fields["click_rate_per_min"] = j.counts.get("click", 0) / (duration / 60.0) if duration > 0 else 0.0
        if j.roms:
            fields["rom_mean_deg"] = float(np.mean(j.roms))
            fields["rom_min_deg"] = float(np.min(j.roms))
        if j.peak_valgus_deg is not None:
            fields["peak_valgus_deg"] = j.peak_valgus_deg
        j.summary_fresh = True
        t = j.start_ns if j.start_ns is not None else j.first_ns
        return line(SUMMARY_MEASUREMENT, joint_tags(athlete, joint, session), fields, int(t or 0))

    def self_report(self, r: SelfReport) -> None:
        fields: dict[str, FieldValue | None] = {"pain": r.pain, "swelling": r.swelling, "injury": r.injury,
                                                "source": r.source, "phase": getattr(r, "phase", None)}
        with self._lock:
            self._joint(r.athlete, r.joint, r.session).see(r.t_ns, data=False)
        self.writer.write([line(REPORT_MEASUREMENT, joint_tags(r.athlete, r.joint, r.session),
                                {k: v for k, v in fields.items() if v is not None}, r.t_ns)])

    # --- gateway and pipeline health --------------------------------------------------------
    def sensor_status(self, s: Status, session: str | None = None) -> None:
        """A sensor status; ``component_id`` is ``athlete.joint.segment``. ``session`` tags it (the service's)."""
        if s.component != "sensor":
            return
        parts = s.component_id.rsplit(".", 2)
        if len(parts) != 3 or not all(parts) or s.t_ns <= 0:
            self._drop("sensor_status_bad", f"id {s.component_id!r} (want athlete.joint.segment) at t_ns={s.t_ns}")
            return
        athlete, joint, sensor = parts
        fields: dict[str, FieldValue] = {"state": s.state}
        for k in SENSOR_INFO_FIELDS:
            if (v := _float(s.info.get(k))) is not None:
                fields[k] = v
        if (n := _int(s.counters.get("reconnects", 0))) is not None:
            fields["reconnects"] = n
        tags = {"athlete": athlete, "joint": joint, "side": side_of(joint), "sensor": sensor, "session": session}
        self.writer.write([line(SENSOR_MEASUREMENT, tags, fields, s.t_ns)])

    def gap(self, topic: DataTopic, g: Gap, session: str | None = None) -> None:
        tags = {"athlete": topic.athlete, "joint": topic.joint, "side": side_of(topic.joint), "sensor": topic.sensor,
                "stream": topic.stream, "reason": g.reason, "session": session}
        self.writer.write([line(GAP_MEASUREMENT, tags, {"duration_s": g.duration_s, "samples": int(g.samples),
                                                        "packets": int(g.packets)}, g.t_start_ns)])

    def pipeline_health(self, component: str, counters: Mapping[str, int], t_ns: int) -> None:
        """``component``'s counters, and this sink's writer's (component ``influx_writer``), at ``t_ns``."""
        lines = []
        own = {**self.writer.counters, **self.counters}
        for name, values in ((component, counters), ("influx_writer", own)):
            fields = {k: n for k, v in values.items() if (n := _int(v)) is not None}
            if fields:
                lines.append(line(HEALTH_MEASUREMENT, {"component": name, "host": self.host}, fields, t_ns))
        self.writer.write(lines)

    def close(self) -> None:
        """Summaries of the joints whose summary is not up to date, then flush and close the writer."""
        with self._lock:
            lines = [self._summary_line(k, j) for k, j in self._joints.items()
                     if not j.summary_fresh and j.first_ns is not None]
        if lines:
            self.writer.write(lines)
        self.writer.close()
