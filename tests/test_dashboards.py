"""The Grafana dashboards (dashboards/grafana) against a real influxd 1.6.

A simulated knee session runs through the real analysis into InfluxDB (tests/influx_session.py), next to
a small hand-made set of points for two more athletes that covers what that session has none of (a
shoulder, instability, locking, battery and RSSI, a benign grade, a second session). Then EVERY panel,
annotation and template-variable query of the dashboard JSON files is rendered as Grafana renders it
(``$timeFilter``, ``$__interval``, the variables, for every value the variable queries offer) and run
through the 1.x ``/query`` API, and each result is compared with what was written: the lines the
writer sent, with InfluxDB's rule that a point written twice (same series and time) keeps the union of
its fields. The static tests check the JSON structure, the provisioning files, and that every query
names only measurements, tags and fields of docs/influxdb-schema.md.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import (
    DATASOURCE_UID,
    PROVISIONING_DIR,
    Point,
    Query,
    dashboard_queries,
    grafana_interval_ms,
    load_dashboards,
    load_schema,
    merged,
    parse_line,
    render,
    schema_problems,
    variable_names,
)
from servers import InfluxDB1Server, http_post

from analysis.influx_sink import REASON_SEPARATOR
from analysis.influx_writer import InfluxWriter, line

DASHBOARDS = load_dashboards()
SCHEMA = load_schema()
EXPECTED_DASHBOARDS = {"jointmon-live", "jointmon-session-review", "jointmon-team-overview"}


def all_queries() -> list[Query]:
    return [q for d in DASHBOARDS.values() for q in dashboard_queries(d)]


# ------------------------------------------------------------------------------------ static checks
def test_dashboard_json_structure() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert set(uids) >= EXPECTED_DASHBOARDS, uids
    assert len(set(uids)) == len(uids), "dashboard uids must be unique"
    assert len({d["title"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    for name, d in DASHBOARDS.items():
        assert isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, name
        assert d.get("id") is None, f"{name}: provisioned dashboards carry no database id"
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids {ids}"
        for p in d["panels"]:
            where = f"{name} panel {p.get('title')!r}"
            assert p.get("datasource") == {"type": "influxdb", "uid": DATASOURCE_UID}, where
            assert p.get("title") and p.get("type"), where
            assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, where
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(set(refs)) == len(refs), f"{where}: refIds {refs}"
            for t in p["targets"]:
                assert t.get("rawQuery") is True and t.get("query"), f"{where}: raw InfluxQL expected"
                assert t.get("datasource", p["datasource"]) == p["datasource"], where
                assert t.get("resultFormat") in ("time_series", "table"), where
        for var in d["templating"]["list"]:
            assert var["type"] == "query" and var["datasource"]["uid"] == DATASOURCE_UID, (name, var["name"])
        for anno in d["annotations"]["list"]:
            if not anno.get("builtIn"):
                assert anno["datasource"]["uid"] == DATASOURCE_UID and anno["target"]["query"], (name, anno["name"])
    live = next(d for d in DASHBOARDS.values() if d["uid"] == "jointmon-live")
    assert live["refresh"] == "5s"
    assert {v["name"] for v in live["templating"]["list"]} >= {"athlete", "joint"}
    assert any("'click'" in a.get("target", {}).get("query", "") for a in live["annotations"]["list"]), \
        "Live shows the click timeline as annotations"
    review = next(d for d in DASHBOARDS.values() if d["uid"] == "jointmon-session-review")
    assert {v["name"] for v in review["templating"]["list"]} >= {"athlete", "joint", "session"}


def test_provisioning_files() -> None:
    (ds_file,) = (PROVISIONING_DIR / "datasources").glob("*.yml")
    ds = yaml.safe_load(ds_file.read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "influxdb" and source["uid"] == DATASOURCE_UID
    assert source["jsonData"]["version"] == "InfluxQL"
    # URL, database and token from the environment (Grafana expands $VAR / ${VAR} in provisioning files).
    assert re.fullmatch(r"\$\{?\w+\}?", source["url"]), source["url"]
    assert re.fullmatch(r"\$\{?\w+\}?", source["jsonData"]["dbName"])
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert re.fullmatch(r"Token \$\{?\w+\}?", source["secureJsonData"]["httpHeaderValue1"])
    (prov_file,) = (PROVISIONING_DIR / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(prov_file.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_query_names_only_schema_measurements_tags_and_fields() -> None:
    queries = all_queries()
    assert len(queries) >= 30
    problems = {q.key: p for d in DASHBOARDS.values() for q in dashboard_queries(d)
                if (p := schema_problems(q.text, SCHEMA, variable_names(d)))}
    assert not problems, json.dumps({" / ".join(k): v for k, v in problems.items()}, indent=1)


@pytest.mark.parametrize("query, expected", [
    ('SELECT mean("flexion") FROM "joint_angle" WHERE $timeFilter', "'flexion' is neither a tag nor a field"),
    ('SELECT "grade" FROM "grades"', "measurement 'grades' is not in"),
    ('SELECT mean(flexion_deg) FROM "joint_angle"', "unquoted identifier"),
    ('SELECT last("battery_pct") FROM "sensor_health" GROUP BY "type"', "'type' is not a tag"),
    ('SHOW TAG VALUES FROM "rep" WITH KEY = "index"', "'index' is not a tag"),
    ('SELECT "reps" FROM "session_summary" WHERE "athlete" =~ /^$athlet$/', "unknown variable $athlet"),
])
def test_schema_check_catches_names_not_in_the_schema(query: str, expected: str) -> None:
    problems = schema_problems(query, SCHEMA, {"athlete"})
    assert any(expected in p for p in problems), problems


# ----------------------------------------------------------------------------- expected values
ALL = ".*"  # a variable's "All" (allValue)


@dataclass
class Case:
    """One view of a dashboard: the chosen variable values, time range and interval, over what was written."""

    by_measurement: dict[str, list[Point]]
    values: dict[str, str]  # variable -> chosen value, or ALL
    t0_ns: int
    t1_ns: int
    interval_ns: int

    def _match(self, p: Point, var_tags: tuple[str, ...]) -> bool:
        return all(self.values[k] == ALL or p.tags.get(k) == self.values[k] for k in var_tags)

    def sel(self, measurement: str, *var_tags: str, timed: bool = False,
            where: Callable[[Point], bool] | None = None) -> list[Point]:
        """Points of ``measurement`` whose tags ``var_tags`` match the chosen variables (inside the time range if
        ``timed``; also ``where``), by time."""
        pts = [p for p in self.by_measurement.get(measurement, []) if self._match(p, var_tags)
               and (not timed or self.t0_ns <= p.t_ns <= self.t1_ns) and (where is None or where(p))]
        return sorted(pts, key=lambda p: p.t_ns)

    def buckets(self, pts: list[Point], field: str, agg: Callable[[list[float]], float]) -> dict[int, float]:
        """``GROUP BY time($__interval)``: epoch-aligned buckets of the field's values, aggregated."""
        groups: dict[int, list[float]] = defaultdict(list)
        for p in pts:
            if field in p.fields:
                groups[p.t_ns // self.interval_ns * self.interval_ns].append(p.fields[field])
        return {t: agg(v) for t, v in groups.items()}


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b and type(a) is type(b)


def assert_rows(got: list[tuple], expected: list[tuple], what: str) -> int:
    """Equal as multisets of tuples (floats to 1e-9); returns how many rows were expected."""
    assert len(got) == len(expected), f"{what}: {len(got)} rows, expected {len(expected)}\n{got[:5]}\n{expected[:5]}"
    for g, e in zip(sorted(got, key=repr), sorted(expected, key=repr), strict=True):
        assert len(g) == len(e) and all(same(x, y) for x, y in zip(g, e, strict=True)), f"{what}: {g} != {e}"
    return len(expected)


def group(pts: list[Point], *tags: str) -> dict[tuple[str, ...], list[Point]]:
    out: dict[tuple[str, ...], list[Point]] = defaultdict(list)
    for p in pts:
        out[tuple(p.tags.get(t, "") for t in tags)].append(p)
    return out


def last(pts: list[Point], field: str) -> Any:
    """InfluxQL last(): the field's value at the latest time it has one (pts sorted by time)."""
    return next((p.fields[field] for p in reversed(pts) if field in p.fields), None)


def agg(pts: list[Point], field: str, fn: Callable[[list[Any]], Any]) -> Any:
    values = [p.fields[field] for p in pts if field in p.fields]
    return fn(values) if values else None


def raw_rows(pts: list[Point], fields: list[str], tags: tuple[str, ...] = ()) -> list[tuple]:
    """A raw ``SELECT f1, f2 ... GROUP BY tags``: one row per point holding at least one of the fields."""
    return [(*(p.tags.get(t, "") for t in tags), p.t_ns, *(p.fields.get(f) for f in fields))
            for p in pts if any(f in p.fields for f in fields)]


def got_rows(rows: list[dict[str, Any]], columns: list[str], tags: tuple[str, ...] = ()) -> list[tuple]:
    return [(*(r.get(t, "") for t in tags), r["time"], *(r.get(c) for c in columns)) for r in rows]


def bucket_check(c: Case, rows: list[dict[str, Any]], column: str, expected: dict[int, float], what: str,
                 tag: tuple[str, str] | None = None) -> int:
    got = {r["time"]: r[column] for r in rows if r.get(column) is not None and (tag is None or r[tag[0]] == tag[1])}
    return assert_rows(sorted(got.items()), sorted(expected.items()), what)


def count_check(rows: list[dict[str, Any]], column: str, n: int, what: str) -> int:
    """An aggregate without GROUP BY: one row holding ``n``, or no series at all when nothing matched."""
    if n == 0:
        assert rows == [] or [r[column] for r in rows] in ([0], [None]), f"{what}: {rows}"
        return 0
    assert [r[column] for r in rows] == [n], f"{what}: {rows}, expected {n}"
    return 1


def last_row_check(rows: list[dict[str, Any]], pts: list[Point], columns: list[str], what: str) -> int:
    """``ORDER BY time DESC LIMIT 1`` over all matching series: the latest point's fields."""
    if not pts:
        assert rows == [], f"{what}: {rows}"
        return 0
    latest = max(pts, key=lambda p: p.t_ns)
    assert len(rows) == 1, f"{what}: {rows}"
    return assert_rows([tuple(rows[0].get(col) for col in columns)],
                       [tuple(latest.fields.get(col) for col in columns)], what)


# One checker per query: (dashboard uid, kind, title, refId) -> f(case, result rows) -> rows expected (> 0 somewhere).
Checker = Callable[[Case, list[dict[str, Any]]], int]
QueryKey = tuple[str, str, str, str]
CHECKS: dict[QueryKey, Checker] = {}


def check(dashboard: str, kind: str, title: str, ref: str = "A") -> Callable[[Checker], Checker]:
    def register(fn: Checker) -> Checker:
        CHECKS[(f"jointmon-{dashboard}", kind, title, ref)] = fn
        return fn
    return register


AJ = ("athlete", "joint")
AJS = ("athlete", "joint", "session")
SENSOR = ("athlete", "joint", "sensor")


def _is_type(*types: str) -> Callable[[Point], bool]:
    return lambda p: p.tags.get("type") in types


def _variable(measurement: str, key: str, *var_tags: str) -> Checker:
    def fn(c: Case, rows: list[dict[str, Any]]) -> int:
        expected = sorted({p.tags[key] for p in c.sel(measurement, *var_tags) if key in p.tags})
        assert sorted(r["value"] for r in rows) == expected and all(r["key"] == key for r in rows), (rows, expected)
        return len(expected)
    return fn


# --- Live ---------------------------------------------------------------------------------------
@check("live", "panel", "Joint angles", "A")
def _live_angles(c: Case, rows: list[dict[str, Any]]) -> int:
    pts = c.sel("joint_angle", *AJ, timed=True)
    return sum(bucket_check(c, rows, col, c.buckets(pts, f, mean), f"knee {f}") for col, f in
               (("flexion", "flexion_deg"), ("abduction (+ valgus)", "abduction_deg"), ("rotation", "rotation_deg")))


@check("live", "panel", "Joint angles", "B")
def _live_shoulder(c: Case, rows: list[dict[str, Any]]) -> int:
    pts = c.sel("joint_angle", *AJ, timed=True, where=lambda p: "shoulder" in p.tags["joint"])
    columns = (("elevation", "elevation_deg"), ("plane of elevation", "plane_deg"), ("axial rotation", "rotation_deg"))
    return sum(bucket_check(c, rows, col, c.buckets(pts, f, mean), f"shoulder {f}") for col, f in columns)


@check("live", "panel", "Reps")
def _live_reps(c: Case, rows: list[dict[str, Any]]) -> int:
    return count_check(rows, "reps", len(c.sel("rep", *AJ, timed=True, where=lambda p: "index" in p.fields)), "reps")


@check("live", "panel", "Clicks")
def _live_clicks(c: Case, rows: list[dict[str, Any]]) -> int:
    return count_check(rows, "clicks", len(c.sel("joint_event", *AJ, timed=True, where=_is_type("click"))), "clicks")


@check("live", "panel", "Instability")
def _live_instability(c: Case, rows: list[dict[str, Any]]) -> int:
    n = len(c.sel("joint_event", *AJ, timed=True, where=_is_type("instability")))
    return count_check(rows, "instability", n, "instability")


@check("live", "panel", "Red-flag grade")
def _live_grade(c: Case, rows: list[dict[str, Any]]) -> int:
    return last_row_check(rows, c.sel("grade", *AJ, timed=True), ["grade", "level", "reasons"], "live grade")


@check("live", "panel", "Valgus per rep")
def _live_valgus(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["peak_valgus_deg", "fppa_deg"]
    return assert_rows(got_rows(rows, ["peak valgus", "FPPA"]), raw_rows(c.sel("rep", *AJ, timed=True), fields),
                       "valgus per rep")


@check("live", "panel", "Alerts: instability, valgus, locking")
def _live_alerts(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["magnitude", "flexion_deg", "duration_s", "rep", "confidence"]
    pts = c.sel("joint_event", *AJ, timed=True, where=_is_type("instability", "valgus", "locking"))
    return assert_rows(got_rows(rows, fields, ("type",)), raw_rows(pts, fields, ("type",)), "alerts")


@check("live", "panel", "Battery")
def _live_battery(c: Case, rows: list[dict[str, Any]]) -> int:
    groups = group(c.sel("sensor_health", *AJ, timed=True), "sensor")
    expected = [(s, last(g, "battery_pct")) for (s,), g in groups.items() if last(g, "battery_pct") is not None]
    return assert_rows([(r["sensor"], r["battery"]) for r in rows], expected, "battery")


@check("live", "panel", "Signal (RSSI)")
def _live_rssi(c: Case, rows: list[dict[str, Any]]) -> int:
    groups = group(c.sel("sensor_health", *AJ, timed=True), "sensor")
    expected = [(s, t, v) for (s,), g in groups.items() for t, v in c.buckets(g, "rssi_dbm", mean).items()]
    return assert_rows([(r["sensor"], r["time"], r["mean"]) for r in rows], expected, "rssi")


@check("live", "panel", "Packet loss")
def _live_loss(c: Case, rows: list[dict[str, Any]]) -> int:
    groups = group(c.sel("sensor_health", *AJ, timed=True), "sensor")
    expected = [(s, t, v) for (s,), g in groups.items() for t, v in c.buckets(g, "loss_pct", max).items()]
    return assert_rows([(r["sensor"], r["time"], r["max"]) for r in rows], expected, "loss")


@check("live", "panel", "Sensor state")
def _live_sensor_state(c: Case, rows: list[dict[str, Any]]) -> int:
    cols = {"state": "state", "packets/s": "packets_per_s", "drift ppm": "clock_drift_ppm", "reconnects": "reconnects"}
    groups = group(c.sel("sensor_health", *AJ, timed=True), "sensor")
    expected = [(s, *(last(g, f) for f in cols.values())) for (s,), g in groups.items()]
    return assert_rows([(r["sensor"], *(r[k] for k in cols)) for r in rows], expected, "sensor state")


@check("live", "panel", "Data gaps")
def _live_gaps(c: Case, rows: list[dict[str, Any]]) -> int:
    groups = group(c.sel("gap", *AJ, timed=True), "sensor", "stream", "reason")
    expected = [(*k, agg(g, "samples", len), agg(g, "samples", sum), agg(g, "duration_s", math.fsum))
                for k, g in groups.items()]
    got = [(r["sensor"], r["stream"], r["reason"], r["gaps"], r["samples lost"], r["seconds lost"]) for r in rows]
    return assert_rows(got, expected, "gaps")


def _annotation_check(event_type: str, tags: tuple[str, ...], fields: list[str]) -> Checker:
    def fn(c: Case, rows: list[dict[str, Any]]) -> int:
        pts = c.sel("joint_event", *tags, timed=True, where=_is_type(event_type))
        return assert_rows(got_rows(rows, fields), raw_rows(pts, fields), f"{event_type} annotations")
    return fn


check("live", "annotation", "Clicks", "")(_annotation_check("click", AJ, ["magnitude", "sensor", "flexion_deg"]))
check("live", "annotation", "Instability", "")(
    _annotation_check("instability", AJ, ["magnitude", "sensor", "flexion_deg"]))
check("live", "variable", "athlete", "")(_variable("joint_angle", "athlete"))
check("live", "variable", "joint", "")(_variable("joint_angle", "joint", "athlete"))


# --- Session review -----------------------------------------------------------------------------
@check("session-review", "panel", "Red-flag grade")
def _review_grade(c: Case, rows: list[dict[str, Any]]) -> int:
    return last_row_check(rows, c.sel("grade", *AJS), ["grade", "level", "final"], "review grade")


@check("session-review", "panel", "Why: the reasons")
def _review_reasons(c: Case, rows: list[dict[str, Any]]) -> int:
    return last_row_check(rows, c.sel("grade", *AJS), ["reasons", "pain", "swelling", "final"], "reasons")


SUMMARY_FIELDS = ["reps", "rom_mean_deg", "rom_min_deg", "clicks", "snaps", "crepitus", "click_rate_per_min",
                  "valgus_episodes", "instability", "locking", "peak_valgus_deg", "duration_s"]


@check("session-review", "panel", "Session summary")
def _review_summary(c: Case, rows: list[dict[str, Any]]) -> int:
    return last_row_check(rows, c.sel("session_summary", *AJS), SUMMARY_FIELDS, "summary")


REP_FIELDS = ["index", "duration_s", "rom_deg", "peak_flexion_deg", "peak_valgus_deg", "fppa_deg", "clicks", "snaps",
              "crepitus"]


@check("session-review", "panel", "Reps")
def _review_reps(c: Case, rows: list[dict[str, Any]]) -> int:
    tags = ("exercise",)
    return assert_rows(got_rows(rows, REP_FIELDS, tags), raw_rows(c.sel("rep", *AJS), REP_FIELDS, tags), "reps table")


@check("session-review", "panel", "ROM per rep")
def _review_rom(c: Case, rows: list[dict[str, Any]]) -> int:
    return assert_rows(got_rows(rows, ["index", "ROM", "peak flexion"]),
                       raw_rows(c.sel("rep", *AJS), ["index", "rom_deg", "peak_flexion_deg"]), "ROM per rep")


@check("session-review", "panel", "Sounds per rep")
def _review_sounds(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["index", "clicks", "snaps", "crepitus"]
    return assert_rows(got_rows(rows, fields), raw_rows(c.sel("rep", *AJS), fields), "sounds per rep")


@check("session-review", "panel", "Events")
def _review_events(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["rep", "magnitude", "flexion_deg", "duration_s", "confidence", "sensor"]
    return assert_rows(got_rows(rows, fields, ("type",)), raw_rows(c.sel("joint_event", *AJS), fields, ("type",)),
                       "events")


@check("session-review", "panel", "Self-reports")
def _review_reports(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["pain", "swelling", "injury", "source", "phase"]
    return assert_rows(got_rows(rows, fields), raw_rows(c.sel("self_report", *AJS), fields), "self-reports")


@check("session-review", "panel", "Grade over the session")
def _review_grade_history(c: Case, rows: list[dict[str, Any]]) -> int:
    return assert_rows(got_rows(rows, ["level"]), raw_rows(c.sel("grade", *AJS, timed=True), ["level"]), "grades")


@check("session-review", "panel", "Flexion over the session")
def _review_flexion(c: Case, rows: list[dict[str, Any]]) -> int:
    pts = c.sel("joint_angle", *AJS, timed=True)
    return sum(bucket_check(c, rows, col, c.buckets(pts, f, mean), f) for col, f in
               (("flexion", "flexion_deg"), ("elevation", "elevation_deg")))


check("session-review", "annotation", "Clicks", "")(_annotation_check("click", AJS, ["magnitude", "sensor", "rep"]))
check("session-review", "variable", "athlete", "")(_variable("session_summary", "athlete"))
check("session-review", "variable", "joint", "")(_variable("session_summary", "joint", "athlete"))
check("session-review", "variable", "session", "")(_variable("session_summary", "session", "athlete", "joint"))


# --- Team overview ------------------------------------------------------------------------------
def _latest_grades(c: Case) -> dict[tuple[str, ...], list[Point]]:
    return group(c.sel("grade", "session"), "athlete", "joint", "session")


def _sensor_problems(c: Case) -> list[tuple[tuple[str, ...], Any, Any, Any]]:
    """The inner query per sensor (last battery, worst loss and RSSI), kept when the outer WHERE holds."""
    out = []
    for key, g in group(c.sel("sensor_health", "session", timed=True), *SENSOR).items():
        battery, loss, rssi = last(g, "battery_pct"), agg(g, "loss_pct", max), agg(g, "rssi_dbm", min)
        # InfluxQL: a comparison with a missing (null) value is false
        if (battery is not None and battery < 20) or (loss is not None and loss > 5) or \
                (rssi is not None and rssi < -85):
            out.append((key, battery, loss, rssi))
    return out


@check("team-overview", "panel", "Athletes")
def _team_athletes(c: Case, rows: list[dict[str, Any]]) -> int:
    athletes = {p.tags["athlete"] for p in c.sel("session_summary", "session") if "duration_s" in p.fields}
    return count_check(rows, "athletes", len(athletes), "athletes")


@check("team-overview", "panel", "Grades to act on")
def _team_grade_count(c: Case, rows: list[dict[str, Any]]) -> int:
    n = sum(1 for g in _latest_grades(c).values() if (last(g, "level") or 0) >= 1)
    return count_check(rows, "joints", n, "grades to act on")


@check("team-overview", "panel", "Instability episodes")
def _team_instability_count(c: Case, rows: list[dict[str, Any]]) -> int:
    return count_check(rows, "instability", len(c.sel("joint_event", "session", where=_is_type("instability"))),
                       "instability episodes")


@check("team-overview", "panel", "Sensors with problems")
def _team_sensor_count(c: Case, rows: list[dict[str, Any]]) -> int:
    return count_check(rows, "sensors", sum(1 for _k, b, _l, _r in _sensor_problems(c) if b is not None),
                       "sensors with problems")


@check("team-overview", "panel", "Grades: watch / seek evaluation")
def _team_grades(c: Case, rows: list[dict[str, Any]]) -> int:
    expected = [(*k, last(g, "grade"), last(g, "reasons"), last(g, "level")) for k, g in _latest_grades(c).items()
                if (last(g, "level") or 0) >= 1]
    got = [(r["athlete"], r["joint"], r["session"], r["grade"], r["reasons"], r["level"]) for r in rows]
    return assert_rows(got, expected, "grades to act on")


@check("team-overview", "panel", "Athletes in the session")
def _team_table(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["reps", "clicks", "click_rate_per_min", "valgus_episodes", "instability", "locking", "peak_valgus_deg",
              "rom_mean_deg", "duration_s"]
    tags = ("athlete", "joint", "session")
    return assert_rows(got_rows(rows, fields, tags), raw_rows(c.sel("session_summary", "session"), fields, tags),
                       "athletes in the session")


@check("team-overview", "panel", "Instability alerts")
def _team_instability(c: Case, rows: list[dict[str, Any]]) -> int:
    fields = ["magnitude", "flexion_deg", "rep", "confidence"]
    pts = c.sel("joint_event", "session", where=_is_type("instability"))
    return assert_rows(got_rows(rows, fields, AJ), raw_rows(pts, fields, AJ), "instability alerts")


@check("team-overview", "panel", "Sensor problems")
def _team_sensor_problems(c: Case, rows: list[dict[str, Any]]) -> int:
    got = [(r["athlete"], r["joint"], r["sensor"], r["battery_pct"], r["loss_pct"], r["rssi_dbm"]) for r in rows]
    return assert_rows(got, [(*k, b, loss, rssi) for k, b, loss, rssi in _sensor_problems(c)], "sensor problems")


@check("team-overview", "panel", "All sensors")
def _team_all_sensors(c: Case, rows: list[dict[str, Any]]) -> int:
    groups = group(c.sel("sensor_health", "session", timed=True), *SENSOR)
    expected = [(*k, last(g, "state"), last(g, "battery_pct"), agg(g, "loss_pct", max), agg(g, "rssi_dbm", min),
                 last(g, "reconnects")) for k, g in groups.items()]
    got = [(r["athlete"], r["joint"], r["sensor"], r["state"], r["battery_pct"], r["loss_pct"], r["rssi_dbm"],
            r["reconnects"]) for r in rows]
    return assert_rows(got, expected, "all sensors")


check("team-overview", "variable", "session", "")(_variable("session_summary", "session"))


def test_every_query_has_a_checker() -> None:
    keys = {q.key for q in all_queries()}
    assert not keys - CHECKS.keys(), f"queries without an expected-value check: {sorted(keys - CHECKS.keys())}"
    assert not CHECKS.keys() - keys, f"checks of queries no dashboard has: {sorted(CHECKS.keys() - keys)}"


# ------------------------------------------------------------------------- the data and the run
def extra_points(session: str, t0: int) -> list[Point]:
    """Two more athletes beside the simulated session, covering what it has none of: a shoulder, instability,
    locking, crepitus, exercise tags, battery/RSSI (one low battery, one lossy link), a summary point written
    twice, a benign grade, and a second session. Times from ``t0`` (Unix ns) on, within the session."""
    s = 1_000_000_000
    knee = {"athlete": "ath-900", "joint": "right_knee", "side": "right", "session": session}
    shoulder = {"athlete": "ath-900", "joint": "left_shoulder", "side": "left", "session": session}
    other = {"athlete": "ath-901", "joint": "left_knee", "side": "left", "session": "team-b"}
    pts = [Point("joint_angle", knee, {"flexion_deg": 40 + 30 * math.sin(i / 7), "rotation_deg": 2.0 + i / 100,
                                       **({"abduction_deg": 3 + i / 50} if i >= 30 else {})}, t0 + s + i * 20_000_000)
           for i in range(100)]
    pts += [Point("joint_angle", shoulder, {"elevation_deg": 20 + i, "plane_deg": 45.0, "rotation_deg": -5.0},
                  t0 + 3 * s + i * 20_000_000) for i in range(50)]
    pts += [Point("rep", {**knee, "exercise": "squat"}, {"index": 1, "duration_s": 2.0, "rom_deg": 88.5,
                                                        "peak_flexion_deg": 92.0, "peak_valgus_deg": 14.0,
                                                        "fppa_deg": 11.5, "clicks": 1, "snaps": 0, "crepitus": 1},
                  t0 + 2 * s),
            Point("rep", {**knee, "exercise": "squat"}, {"index": 2, "duration_s": 2.5, "rom_deg": 80.0,
                                                        "peak_flexion_deg": 85.0, "peak_valgus_deg": 6.0,
                                                        "fppa_deg": 4.0, "clicks": 0, "snaps": 0, "crepitus": 0},
                  t0 + 5 * s),
            Point("rep", knee, {"index": 3, "duration_s": 1.9, "rom_deg": 60.0, "peak_flexion_deg": 62.0, "clicks": 0,
                                "snaps": 0, "crepitus": 0}, t0 + 8 * s),
            Point("rep", shoulder, {"index": 1, "duration_s": 3.0, "rom_deg": 120.0, "peak_flexion_deg": 140.0,
                                    "clicks": 0, "snaps": 1, "crepitus": 0}, t0 + 3 * s + s // 2)]

    def event(kind: str, dt: float, tags: dict[str, str] = knee, **fields: Any) -> Point:
        return Point("joint_event", {**tags, "type": kind},
                     {"confidence": 0.9, "sensor": "shank", "stream_t_s": dt, "details": "{}", **fields},
                     t0 + round(dt * s))

    pts += [event("click", 2.5, magnitude=18.0, flexion_deg=60.0, rep=1),
            event("click", 9.0, magnitude=12.5, flexion_deg=20.0),
            event("crepitus", 3.0, magnitude=9.0, duration_s=1.2, rep=1),
            event("instability", 5.5, magnitude=250.0, flexion_deg=35.0, rep=2),
            event("instability", 9.5, magnitude=180.0, flexion_deg=25.0),
            event("valgus", 2.2, magnitude=14.0, duration_s=0.8, rep=1, flexion_deg=70.0),
            event("locking", 8.5, magnitude=22.0, rep=3),
            event("snap", 3.7, shoulder, magnitude=15.0, rep=1, flexion_deg=110.0)]
    pts += [Point("grade", knee, {"grade": "watch", "level": 1, "final": False, "reasons": "click rate 6/min"},
                  t0 + 4 * s),
            Point("grade", knee, {"grade": "seek evaluation", "level": 2, "final": True, "pain": 6, "swelling": True,
                                  "reasons": "giving way: 2 episodes | pain 6/10 reported with swelling"}, t0 + 10 * s),
            Point("grade", shoulder, {"grade": "watch", "level": 1, "final": True, "reasons": "snap with pain"},
                  t0 + 5 * s),
            Point("grade", other, {"grade": "benign", "level": 0, "final": True, "reasons": ""}, t0 + 6 * s)]
    summary = {"duration_s": 10.0, "reps": 3, "clicks": 2, "snaps": 0, "crepitus": 1, "click_rate_per_min": 12.0,
               "valgus_episodes": 1, "instability": 2, "locking": 1, "rom_mean_deg": 76.2, "rom_min_deg": 60.0}
    pts += [Point("session_summary", knee, {**summary, "reps": 1, "duration_s": 3.0, "peak_valgus_deg": 14.0}, t0),
            Point("session_summary", knee, summary, t0),  # rewritten: peak_valgus_deg stays from the first write
            Point("session_summary", shoulder, {"duration_s": 6.0, "reps": 1, "clicks": 0, "snaps": 1, "crepitus": 0,
                                                "click_rate_per_min": 0.0, "valgus_episodes": 0, "instability": 0,
                                                "locking": 0, "rom_mean_deg": 120.0, "rom_min_deg": 120.0}, t0 + s),
            Point("session_summary", other, {"duration_s": 8.0, "reps": 4, "clicks": 0, "snaps": 0, "crepitus": 0,
                                             "click_rate_per_min": 0.0, "valgus_episodes": 0, "instability": 0,
                                             "locking": 0}, t0 + 2 * s)]
    pts += [Point("self_report", knee, {"pain": 6, "swelling": True, "injury": False, "source": "athlete",
                                        "phase": "before"}, t0 + s // 2)]
    thigh = {**knee, "sensor": "thigh"}
    shank = {**knee, "sensor": "shank"}
    for i in range(5):
        t = t0 + (1 + 2 * i) * s
        pts.append(Point("sensor_health", thigh, {"state": "streaming", "battery_pct": 22.0 - i, "rssi_dbm": -70.0 - i,
                                                  "loss_pct": 0.5, "packets_per_s": 40.0, "clock_drift_ppm": 12.5,
                                                  "reconnects": i // 3}, t))
        pts.append(Point("sensor_health", shank, {"state": "streaming" if i < 4 else "backoff", "battery_pct": 80.0,
                                                  "rssi_dbm": -80.0 - 2 * i, "loss_pct": 2.0 + 2 * i,
                                                  "packets_per_s": 38.0, "clock_drift_ppm": -3.0, "reconnects": i}, t))
    pts.append(Point("sensor_health", {**other, "sensor": "thigh"},
                     {"state": "streaming", "battery_pct": 90.0, "rssi_dbm": -60.0, "loss_pct": 0.0}, t0 + 2 * s))
    pts += [Point("gap", {**thigh, "stream": "imu", "reason": "lost"}, {"duration_s": 0.04, "samples": 4, "packets": 1},
                  t0 + 3 * s),
            Point("gap", {**thigh, "stream": "imu", "reason": "lost"}, {"duration_s": 0.08, "samples": 8, "packets": 2},
                  t0 + 6 * s),
            Point("gap", {**shank, "stream": "mic", "reason": "reboot"},
                  {"duration_s": 1.5, "samples": 24000, "packets": 150}, t0 + 7 * s)]
    return pts


@dataclass
class Written:
    points: list[Point]  # as InfluxDB keeps them (merged)
    session: Any  # influx_session.WrittenSession of the simulated session
    lines: int


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InfluxDB1Server, Written]]:
    """influxd 1.6 holding the simulated session (through the real analysis and sink) and the extra points."""
    from conftest import _make  # the skip-or-fail rule of a missing server, for this module-scoped server
    from influx_session import write_session

    server = _make(InfluxDB1Server, workdir=tmp_path_factory.mktemp("influxd"), database="jointmon")
    with server:
        sent: list[str] = []
        original = InfluxWriter.write

        def spy(self: InfluxWriter, lines: Any) -> Any:  # the real write, and a copy of what it was given
            lines = list(lines)
            sent.extend(lines)
            return original(self, lines)

        mp = pytest.MonkeyPatch()
        mp.setattr(InfluxWriter, "write", spy)
        try:
            session = write_session(server.url, server.database)
        finally:
            mp.undo()
        assert len(sent) == session.writer["points_received"], "the spy must see every point the writer took"
        extras = [line(p.measurement, p.tags, p.fields, p.t_ns)
                  for p in extra_points(session.session, session.start_ns)]
        status, body = http_post(f"{server.url}/write?db={server.database}&precision=ns", "\n".join(extras).encode())
        assert status == 204, body
        points = merged([parse_line(ln) for ln in [*sent, *extras]])
        yield server, Written(points, session, len(sent) + len(extras))


def influx_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a one-statement result: columns, plus the series' tags."""
    (statement,) = result["results"]
    return [{**dict(zip(s["columns"], v, strict=True)), **(s.get("tags") or {})}
            for s in statement.get("series", []) for v in s["values"]]


def _variable_values(server: InfluxDB1Server, case_values: dict[str, str], t0_ms: int, t1_ms: int, interval_ms: int,
                     var: dict[str, Any]) -> list[str]:
    text = render(var["query"], case_values, t0_ms, t1_ms, interval_ms)
    return sorted(r["value"] for r in influx_rows(server.query(text)))


def cases(server: InfluxDB1Server, dash: dict[str, Any], t0_ms: int, t1_ms: int,
          interval_ms: int) -> Iterator[dict[str, str]]:
    """Every combination of variable values a user can pick, each variable's options from its own query given
    the variables before it (as Grafana chains them); a variable with "All" also as All."""
    def expand(variables: list[dict[str, Any]], chosen: dict[str, str]) -> Iterator[dict[str, str]]:
        if not variables:
            yield chosen
            return
        var, rest = variables[0], variables[1:]
        options = _variable_values(server, chosen, t0_ms, t1_ms, interval_ms, var)
        if var.get("includeAll"):
            options = [ALL, *options]
        for value in options:
            yield from expand(rest, {**chosen, var["name"]: value})

    yield from expand(list(dash["templating"]["list"]), {})


def run_dashboards(server: InfluxDB1Server, by_measurement: dict[str, list[Point]], t0_ms: int, t1_ms: int,
                   interval_ms: int, runs: dict[QueryKey, list[int]], log: list[dict[str, Any]]) -> None:
    """Every query of every dashboard for every variable combination, each result checked; ``runs`` gets the
    number of rows each check expected, ``log`` one entry per execution."""
    ms = 1_000_000
    for dash in DASHBOARDS.values():
        all_values = {v["name"]: v.get("allValue", "") for v in dash["templating"]["list"]}
        queries = list(dashboard_queries(dash))
        for values in cases(server, dash, t0_ms, t1_ms, interval_ms):
            case = Case(by_measurement, values, t0_ms * ms, t1_ms * ms, interval_ms * ms)
            rendered_values = {k: ("$__all" if v == ALL else v) for k, v in values.items()}
            for q in queries:
                if q.kind == "variable":  # a variable's query sees only the variables before it
                    names = [v["name"] for v in dash["templating"]["list"]]
                    visible = {k: v for k, v in rendered_values.items() if names.index(k) < names.index(q.title)}
                    case_for_q = Case(by_measurement, {k: values[k] for k in visible}, case.t0_ns, case.t1_ns,
                                      case.interval_ns)
                else:
                    visible, case_for_q = rendered_values, case
                text = render(q.text, visible, t0_ms, t1_ms, interval_ms, all_values)
                assert "$" not in text.replace("$/", "").replace("^$", ""), f"{q.key}: not rendered: {text}"
                rows = influx_rows(server.query(text))
                try:
                    n = CHECKS[q.key](case_for_q, rows)
                except AssertionError as exc:
                    raise AssertionError(f"{' / '.join(q.key)} with {values}:\n{text}\n{exc}") from None
                runs[q.key].append(n)
                log.append({"query": " / ".join(q.key), "variables": values, "interval_ms": interval_ms,
                            "rendered": text, "rows": len(rows), "expected_rows": n})


def test_every_dashboard_query_returns_what_was_written(written: tuple[InfluxDB1Server, Written],
                                                        artifacts_dir: Path) -> None:
    server, w = written
    by_measurement: dict[str, list[Point]] = defaultdict(list)
    for p in w.points:
        by_measurement[p.measurement].append(p)
    ms = 1_000_000
    t0_ms = min(p.t_ns for p in w.points) // ms - 1000
    t1_ms = max(p.t_ns for p in w.points) // ms + 1000
    runs: dict[QueryKey, list[int]] = defaultdict(list)
    log: list[dict[str, Any]] = []
    # A wide panel (1000 points: ~1 angle sample per bucket) and a narrow one (100: many samples averaged).
    for max_points in (1000, 100):
        interval_ms = grafana_interval_ms(t1_ms - t0_ms, max_points)
        run_dashboards(server, by_measurement, t0_ms, t1_ms, interval_ms, runs, log)
    queries = {q.key for q in all_queries()}
    assert queries == runs.keys(), sorted(queries ^ runs.keys())
    never = [" / ".join(k) for k, ns in runs.items() if not any(ns)]
    assert not never, f"queries that never had anything to return (the data does not test them): {never}"
    (artifacts_dir / "dashboard_queries.json").write_text(json.dumps(log, indent=1))
    print(f"\n{len(runs)} dashboard queries, {len(log)} executions over the variable combinations, all as written")

    # The simulated session's own figures (not through the lines): what the dashboards show for it.
    s = w.session
    view = {"athlete": s.athlete, "joint": s.joint, "session": s.session}
    live_clicks = f'SELECT "magnitude" FROM "joint_event" WHERE "type" = \'click\' AND "athlete" =~ /^{s.athlete}$/ ' \
                  f'AND "joint" =~ /^{s.joint}$/ AND time >= {t0_ms}ms and time <= {t1_ms}ms'
    assert len(influx_rows(server.query(live_clicks))) == s.events["click"]
    review = next(d for d in DASHBOARDS.values() if d["uid"] == "jointmon-session-review")
    panels = {p["title"]: p["targets"][0]["query"] for p in review["panels"]}
    reps = influx_rows(server.query(render(panels["Reps"], view, t0_ms, t1_ms, interval_ms)))
    assert len(reps) == s.reps and [r["index"] for r in sorted(reps, key=lambda r: r["time"])] == \
        list(range(1, s.reps + 1))
    (grade,) = influx_rows(server.query(render(panels["Red-flag grade"], view, t0_ms, t1_ms, interval_ms)))
    assert grade["grade"] == s.final_grade.grade and grade["final"] is True
    (why,) = influx_rows(server.query(render(panels["Why: the reasons"], view, t0_ms, t1_ms, interval_ms)))
    assert why["reasons"] == REASON_SEPARATOR.join(r.text for r in s.final_grade.reasons)
    assert why["pain"] == s.report.pain


def test_rendering_matches_grafana() -> None:
    q = 'SELECT mean("x") FROM "m" WHERE "a" =~ /^$athlete$/ AND "s" =~ /^${session}$/ AND $timeFilter ' \
        'GROUP BY time($__interval)'
    out = render(q, {"athlete": "ath.1", "session": ["s-1", "s-2"]}, 1000, 2000, 200)
    assert out == 'SELECT mean("x") FROM "m" WHERE "a" =~ /^ath\\.1$/ AND "s" =~ /^(s-1|s-2)$/ AND ' \
                  'time >= 1000ms and time <= 2000ms GROUP BY time(200ms)'
    assert render('"s" =~ /^$session$/', {"session": "$__all"}, 0, 1, 1, {"session": ".*"}) == '"s" =~ /^.*$/'
    assert grafana_interval_ms(5 * 60_000) == 200  # 5 min over 1000 points: 300 ms -> 200 ms
    assert grafana_interval_ms(3_600_000) == 5000
