"""InfluxSink: a simulated session through the real analysis into real servers, read back per measurement
(docs/influxdb-schema.md): influxd 1.x (v1 API, InfluxQL) and VictoriaMetrics (2.x write API)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from influx_session import WrittenSession, write_session
from servers import InfluxDB1Server, VictoriaMetricsServer, http_get

from analysis.influx_writer import InfluxWriter
from jointmon.config import InfluxSettings
from jointmon.messages import GRADES


def _one(influx: InfluxDB1Server, q: str) -> dict:
    rows = influx.rows(q)
    assert len(rows) == 1, (q, rows)
    return rows[0]


def vm_export(vm: VictoriaMetricsServer, match: str, w: WrittenSession, *, min_samples: dict[str, int],
              timeout_s: float = 10.0) -> dict[str, list[dict[str, Any]]]:
    """Series by name over the session's time range (a fast simulated session runs ahead of the wall clock,
    past the export's default end = now), polled until the named series hold ``min_samples`` (VictoriaMetrics
    makes new samples searchable only after a moment)."""
    params = {"match[]": match, "start": str(w.start_ns // 10**9 - 1), "end": str(w.end_ns // 10**9 + 2)}
    deadline = time.monotonic() + timeout_s
    while True:
        vm.force_flush()
        status, body = http_get(f"{vm.url}/api/v1/export?{urllib.parse.urlencode(params)}")
        assert status == 200, body[:300]
        by_name: dict[str, list[dict[str, Any]]] = {}
        for s in (json.loads(ln) for ln in body.splitlines() if ln.strip()):
            by_name.setdefault(s["metric"]["__name__"], []).append(s)
        n = {k: sum(len(s["values"]) for s in by_name.get(k, [])) for k in min_samples}
        if all(n[k] >= v for k, v in min_samples.items()) or time.monotonic() > deadline:
            return by_name
        time.sleep(0.1)


def check_v1_session(influx: InfluxDB1Server, w: WrittenSession) -> None:
    """Every measurement of docs/influxdb-schema.md holds what the session wrote."""
    where = f"session = '{w.session}'"
    # joint_angle: every stored sample, with the side tag
    angle = _one(influx, f"SELECT count(flexion_deg) AS n FROM joint_angle WHERE {where} AND side = '{w.side}'")
    assert angle["n"] == w.angle_points > 40 * 45
    # joint_event: per type, no reps; flexion at the event for sounds; rep where inside a rep
    rows = influx.rows(f"SELECT * FROM joint_event WHERE {where}")
    assert Counter(r["type"] for r in rows) == w.events
    assert all(r["athlete"] == w.athlete and r["joint"] == w.joint and r["side"] == w.side for r in rows)
    clicks = [r for r in rows if r["type"] == "click"]
    assert clicks and all(isinstance(r["flexion_deg"], int | float) for r in clicks)  # 96.0 reads back as 96
    assert all(r["rep"] is None or 1 <= r["rep"] <= w.reps for r in rows)
    # rep: one per rep, in order, with peak, ROM and sound counts
    reps = influx.rows(f"SELECT * FROM rep WHERE {where}")
    assert [r["index"] for r in reps] == list(range(1, w.reps + 1))
    assert [r["peak_flexion_deg"] for r in reps] == pytest.approx(w.rep_peaks_deg, abs=1e-9)
    assert all(r["rom_deg"] > 20 and r["duration_s"] > 0.4 for r in reps)
    in_reps = Counter(r["rep"] for r in clicks if r["rep"] is not None)
    assert {r["index"]: r["clicks"] for r in reps if r["clicks"]} == dict(in_reps)
    # session_summary: one point per joint, counts equal to the events'
    s = _one(influx, f"SELECT * FROM session_summary WHERE {where}")
    assert (s["reps"], s["clicks"], s["valgus_episodes"], s["locking"]) == \
           (w.reps, w.events["click"], w.events["valgus"], w.events["locking"])
    assert s["duration_s"] == pytest.approx(w.final_grade.figures["duration_s"])
    assert s["rom_min_deg"] == pytest.approx(min(r["rom_deg"] for r in reps))
    assert s["time"] == w.start_ns
    # grade: interim ones, then the final one with its reasons
    grades = influx.rows(f"SELECT * FROM grade WHERE {where}")
    last = grades[-1]
    assert last["final"] is True and last["grade"] == w.final_grade.grade
    assert last["level"] == GRADES.index(w.final_grade.grade)
    assert last["reasons"].split(" | ") == [r.text for r in w.final_grade.reasons]
    assert last["pain"] == w.report.pain and last["swelling"] is w.report.swelling
    # At the last data time; each grade >= 1 ms after the previous one (an interim grade right after the last data,
    # then the final one with no data between: end + 1 ms), so up to 1 ms per earlier grade past the data's end.
    assert any(g["final"] is False for g in grades)
    assert w.start_ns <= last["time"] <= w.end_ns + 1_000_000 * (len(grades) - 1)
    # self_report
    rep = _one(influx, f"SELECT * FROM self_report WHERE {where}")
    assert (rep["pain"], rep["swelling"], rep["source"]) == (w.report.pain, w.report.swelling, "athlete")
    # sensor_health: every status, per sensor
    health = influx.rows(f"SELECT * FROM sensor_health WHERE {where}")
    assert len(health) == len(w.sensor_statuses) > 0
    assert {r["sensor"] for r in health} == {"thigh", "shank"} if w.kind == "knee" else {"upper_arm", "trunk"}
    assert "streaming" in {r["state"] for r in health}
    # gap: every gap record, with its samples
    if w.gaps:
        g = _one(influx, f"SELECT count(samples) AS n, sum(samples) AS samples FROM gap WHERE {where}")
        assert (g["n"], g["samples"]) == (len(w.gaps), sum(x.samples for x in w.gaps))
    # pipeline_health: the analysis' counters and the writer's
    comp = {r["component"]: r for r in influx.rows("SELECT last(frames) AS frames, last(points_written) AS written "
                                                   "FROM pipeline_health GROUP BY component")}
    assert comp["analysis"]["frames"] == w.run.analysis_counters["frames"]
    assert comp["influx_writer"]["written"] > 0


def test_knee_session_into_influxdb_v1(influxdb1: InfluxDB1Server) -> None:
    w = write_session(influxdb1.url, influxdb1.database, session="knee-v1")
    assert w.reps >= 5 and w.events["click"] >= 3 and w.events["valgus"] >= 1 and w.gaps
    assert w.final_grade.grade == "seek evaluation"  # pain with clicking
    check_v1_session(influxdb1, w)


def test_shoulder_session_into_influxdb_v1(influxdb1: InfluxDB1Server) -> None:
    w = write_session(influxdb1.url, influxdb1.database, kind="shoulder", session="shoulder-v1", pain=0)
    assert w.reps >= 3
    rows = influxdb1.rows("SELECT elevation_deg, flexion_deg FROM joint_angle WHERE session = 'shoulder-v1'")
    assert len(rows) == w.angle_points and all(r["flexion_deg"] is None for r in rows)
    assert max(r["elevation_deg"] for r in rows if r["elevation_deg"] is not None) > 120
    reps = influxdb1.rows("SELECT index, peak_flexion_deg FROM rep WHERE session = 'shoulder-v1' AND side = 'right'")
    assert len(reps) == w.reps


def test_knee_session_into_victoria_metrics_v2(victoria_metrics: VictoriaMetricsServer) -> None:
    """The 2.x write API (influxdb-client): VictoriaMetrics stores numeric fields as measurement_field series."""
    w = write_session(victoria_metrics.url, "jointmon", api="v2", session="knee-v2")
    by_name = vm_export(victoria_metrics, '{session="knee-v2"}', w, min_samples={
        "joint_angle_flexion_deg": w.angle_points, "grade_level": len(w.grades), "session_summary_reps": 1})
    assert sum(len(s["values"]) for s in by_name["joint_angle_flexion_deg"]) == w.angle_points
    # Per event type: one sample per event (a rewrite with its rep shares the ms timestamp; VM may keep both)
    conf = {s["metric"]["type"]: len(set(s["timestamps"])) for s in by_name["joint_event_confidence"]}
    assert conf == dict(w.events)
    peaks = sorted({t: v for s in by_name["rep_peak_flexion_deg"]
                    for t, v in zip(s["timestamps"], s["values"], strict=True)}.items())
    assert [v for _, v in peaks] == pytest.approx(w.rep_peaks_deg, rel=1e-9)
    levels = [(t, v) for s in by_name["grade_level"] for t, v in zip(s["timestamps"], s["values"], strict=True)]
    assert len(levels) == len(w.grades) and max(levels)[1] == GRADES.index(w.final_grade.grade)
    # session_summary is rewritten at one timestamp: VictoriaMetrics keeps every version; counts only grow
    assert max(by_name["session_summary_reps"][0]["values"]) == w.reps
    assert by_name["self_report_pain"][0]["values"] == [w.report.pain]
    assert sum(len(s["values"]) for s in by_name["gap_samples"]) == len(w.gaps)
    assert {s["metric"]["sensor"] for s in by_name["sensor_health_loss_pct"]} == {"thigh", "shank"}


def test_influxd_down_mid_session_nothing_lost(influxdb1: InfluxDB1Server, tmp_path: Path) -> None:
    """influxd stops once the analysis has written ~300 points and comes back (same data dir) at ~1200 of
    ~2300: the spool keeps what the analysis wrote meanwhile and replays it in order; every measurement then
    holds exactly what was written."""
    settings = InfluxSettings(url=influxdb1.url, api="v1", database=influxdb1.database, batch_size=2000,
                              flush_interval_s=0.2, spool_dir=str(tmp_path / "spool"))
    writer = InfluxWriter(settings, retry_backoff_s=0.1, max_backoff_s=0.5)
    done = threading.Event()
    marks: dict[str, int] = {}

    def outage() -> None:  # driven by what the analysis has written, not by the clock
        for mark, at, action in (("stop", 300, influxdb1.stop), ("start", 1200, influxdb1.start)):
            while writer.counters["points_received"] < at and not done.is_set():
                time.sleep(0.01)
            marks[mark] = writer.counters["points_received"]
            action()
        # influxd dies with the thread that started it (servers.py: PR_SET_PDEATHSIG): stay until the end
        done.wait()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        w = write_session(settings, session="knee-outage", writer=writer)
        assert set(marks) == {"stop", "start"} and influxdb1.running
        c = w.writer
        assert c["points_spooled"] > 500 and c["points_replayed"] == c["points_spooled"], c
        assert (c["points_failed"], c["points_dropped"], c["points_pending"], c["spool_points"]) == (0, 0, 0, 0), c
        assert c["batches_failed_attempts"] >= 1
        check_v1_session(influxdb1, w)
    finally:
        done.set()
        thread.join()
