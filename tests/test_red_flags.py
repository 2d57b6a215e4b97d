"""Red-flag grading (analysis.red_flags), session history (analysis.athlete_history), the self-report
and grade messages, the CLI around them, and self-reports over MQTT into the analysis service."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from analysis.athlete_history import AthleteHistory, grade_with_history
from analysis.red_flags import RedFlagSettings, SessionSummary, grade_session, summarize
from jointmon.cli import main
from jointmon.config import MqttSettings
from jointmon.errors import MessageError, TopicError
from jointmon.messages import GRADES, NOT_A_DIAGNOSIS, JointEvent, JointGrade, SelfReport
from jointmon.topics import (
    GRADES_SUBSCRIPTION,
    grades_topic,
    parse_grades_topic,
    parse_reports_topic,
    reports_topic,
)

A, J = "ath-001", "left_knee"
MIN_NS = 60 * 10**9
DAY_NS = 86_400 * 10**9


def ev(type_: str, t_s: float, session: str = "s-now", joint: str = J, **details: object) -> JointEvent:
    return JointEvent(type_, A, joint, session, int(1e12 + t_s * 1e9), t_s, "shank", 0.9, 10.0, dict(details))


def summary(session: str, day: int, clicks: int, minutes: float = 1.0, joint: str = J, **counts: int) -> SessionSummary:
    return SessionSummary(A, joint, session, day * DAY_NS, minutes * 60.0, {"click": clicks, **counts})


def flags(grade: JointGrade) -> dict[str, str]:
    return {r.flag: r.level for r in grade.reasons if r.flag != "info"}


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------

def test_painless_occasional_clicks_are_benign() -> None:
    g = grade_session(summary("s-now", 5, clicks=2), SelfReport(A, J, "s-now", 0, pain=0, swelling=False))
    assert g.grade == "benign"
    assert flags(g) == {}
    assert g.disclaimer == NOT_A_DIAGNOSIS and "not a diagnosis" in g.text()
    assert g.figures["sound_rate_per_min"] == 2.0


def test_worsening_click_history_grades_watch_with_reason_text() -> None:
    history = [summary("s1", 1, 3), summary("s2", 2, 2), summary("s3", 3, 4)]
    g = grade_session(summary("s-now", 4, clicks=14), None, history)
    assert g.grade == "watch"
    assert flags(g) == {"clicks_worsening": "watch"}
    (reason,) = [r for r in g.reasons if r.flag == "clicks_worsening"]
    assert reason.text == "click rate 14/min, up from 3/min over the last 3 sessions"
    assert g.figures["baseline_sound_rate_per_min"] == 3.0
    assert g.reasons[0].flag == "clicks_worsening"  # most concerning first


def test_steadily_rising_clicks_grade_seek_evaluation() -> None:
    history = [summary("s1", 1, 2), summary("s2", 2, 3), summary("s3", 3, 4)]
    g = grade_session(summary("s-now", 4, clicks=14), None, history)
    assert g.grade == "seek evaluation"
    (reason,) = [r for r in g.reasons if r.flag == "clicks_worsening"]
    assert "rising in each of the last 4 sessions (2/min -> 3/min -> 4/min -> 14/min)" in reason.text


def test_a_small_rise_is_not_worsening() -> None:
    history = [summary("s1", 1, 3), summary("s2", 2, 3), summary("s3", 3, 3)]
    assert grade_session(summary("s-now", 4, clicks=5), None, history).grade == "benign"  # < 2x baseline
    assert grade_session(summary("s-now", 4, clicks=6), None, history).grade == "watch"  # 2x and +3/min
    steady = grade_session(summary("s-now", 4, clicks=3), None, history)
    assert any("click rate 3/min, against 3/min over the last 3 sessions (steady" in r.text for r in steady.reasons)
    painful = grade_session(summary("s-now", 4, clicks=3), SelfReport(A, J, "s-now", 0, pain=2), history)
    assert painful.grade == "seek evaluation" and "usually mechanical" not in painful.text()
    low = [summary("s1", 1, 1), summary("s2", 2, 1), summary("s3", 3, 1)]
    assert grade_session(summary("s-now", 4, clicks=3), None, low).grade == "benign"  # 3x, but only +2/min


def test_new_clicking_on_a_quiet_joint_and_spreading() -> None:
    history = [summary("s1", 1, 0), summary("s2", 2, 0)]
    g = grade_session(summary("s-now", 3, clicks=5), None, history)
    assert flags(g) == {"clicks_new": "watch"} and g.grade == "watch"
    assert "new clicking: click rate 5/min" in g.reasons[0].text
    other = {"right_knee": summary("r1", 2, 8, joint="right_knee")}
    g = grade_session(summary("s-now", 3, clicks=5), None, history, other)
    assert flags(g) == {"clicks_new": "watch", "clicks_spreading": "watch"}
    assert any("right_knee (8/min) already clicks" in r.text for r in g.reasons)


def test_no_trend_without_enough_history() -> None:
    g = grade_session(summary("s-now", 2, clicks=30), None, [summary("s1", 1, 0)])
    assert g.grade == "benign"
    assert any("no trend yet (1 earlier session" in r.text for r in g.reasons)


def test_instability_is_seek_evaluation_with_exercise_in_words() -> None:
    events = [ev("instability", 12.0, exercise="step_down"), ev("instability", 40.0, exercise="step_down"),
              ev("click", 3.0), ev("rep", 1.0), ev("instability", 5.0, session="other")]
    s = summarize(events, A, J, "s-now", 60.0, t_ns=DAY_NS)
    assert s.counts == {"instability": 2, "click": 1, "rep": 1}
    g = grade_session(s)
    assert g.grade == "seek evaluation"
    assert any(r.text.startswith("2 giving-way episodes (instability) during step-downs") for r in g.reasons)


def test_locking_once_is_watch_twice_is_seek() -> None:
    assert grade_session(summary("s", 1, 0, locking=1)).grade == "watch"
    g = grade_session(summary("s", 1, 0, locking=2))
    assert g.grade == "seek evaluation"
    assert "2 locking or restricted-motion episodes" in g.text()


@pytest.mark.parametrize(("report", "clicks", "grade", "flag"), [
    (SelfReport(A, J, "s-now", 0, pain=2), 3, "seek evaluation", "pain"),  # pain with clicking
    (SelfReport(A, J, "s-now", 0, pain=2), 0, "watch", "pain"),  # mild pain, no joint sound
    (SelfReport(A, J, "s-now", 0, pain=5), 0, "seek evaluation", "pain"),
    (SelfReport(A, J, "s-now", 0, swelling=True), 0, "seek evaluation", "swelling"),
    (SelfReport(A, J, "s-now", 0, injury=True), 2, "seek evaluation", "injury"),
    (SelfReport(A, J, "s-now", 0, pain=0, swelling=False), 3, "benign", None),
])
def test_self_reported_flags(report: SelfReport, clicks: int, grade: str, flag: str | None) -> None:
    g = grade_session(summary("s-now", 1, clicks), report)
    assert g.grade == grade
    assert set(flags(g)) == ({flag} if flag else set())
    assert g.figures.get("pain") == report.pain


def test_missing_self_report_is_said_not_assumed() -> None:
    g = grade_session(summary("s-now", 1, 0))
    assert g.grade == "benign"
    assert any("pain and swelling were not reported" in r.text for r in g.reasons)


def test_thresholds_are_settings() -> None:
    strict = RedFlagSettings(locking_seek_events=1, pain_with_sounds_seek_min=4)
    assert grade_session(summary("s", 1, 0, locking=1), settings=strict).grade == "seek evaluation"
    assert grade_session(summary("s", 1, 3), SelfReport(A, J, "s", 0, pain=2), settings=strict).grade == "watch"


def test_other_joint_sounds_are_named() -> None:
    g = grade_session(SessionSummary(A, J, "s", 0, 60.0, {"click": 4, "snap": 8, "crepitus": 1}))
    assert any(r.text.startswith("joint-sound rate (4 clicks, 8 snaps, 1 crepitus) 13/min") for r in g.reasons)


def test_valgus_is_a_note_not_a_red_flag() -> None:
    g = grade_session(summary("s", 1, 0, valgus=5), SelfReport(A, J, "s", 0, pain=0, swelling=False))
    assert g.grade == "benign"
    assert any("5 knee-valgus episodes" in r.text for r in g.reasons)


# ---------------------------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------------------------

def test_history_builds_the_trend_and_replaces_a_regraded_session(tmp_path: Path) -> None:
    with AthleteHistory(tmp_path / "h.sqlite") as h:
        for i, clicks in enumerate([3, 3, 3]):
            assert grade_with_history(summary(f"s{i}", i, clicks), None, h).grade == "benign"
        grade_with_history(summary("s2", 2, 3), None, h)  # re-analysed: still 3 sessions
        assert len(h.sessions(A, J)) == 3
        g = grade_with_history(summary("s3", 3, 14), SelfReport(A, J, "s3", 0, pain=0), h)
        assert g.grade == "watch" and "up from 3/min over the last 3 sessions" in g.text()
        # the stored report is used when the session is graded again without one
        assert h.report(A, J, "s3") == SelfReport(A, J, "s3", 0, pain=0)
        assert grade_with_history(summary("s3", 3, 14), None, h).figures["pain"] == 0
        assert [gr for _, gr in h.sessions(A, J)] == ["benign", "benign", "benign", "watch"]
        # interim grades are not recorded
        grade_with_history(summary("s4", 4, 0), None, h, final=False)
        assert len(h.sessions(A, J)) == 4


# ---------------------------------------------------------------------------------------------
# messages and topics
# ---------------------------------------------------------------------------------------------

def test_self_report_round_trip_and_validation() -> None:
    r = SelfReport(A, J, "s1", 123, pain=3, swelling=True, source="coach")
    assert SelfReport.from_json(r.to_json()) == r
    assert json.loads(r.to_json()) == {"athlete": A, "joint": J, "session": "s1", "t_ns": 123, "pain": 3,
                                       "swelling": True, "injury": None, "source": "coach"}
    for bad in [b"", b"[]", b'{"athlete":"a"}', b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"pain":11}',
                b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"pain":2.5}',
                b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"pain":"3"}',
                b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"swelling":"yes"}',
                b'{"athlete":"a","joint":"j","session":"s","t_ns":1}',  # nothing reported
                b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"pain":1,"source":"mum"}', b"\xff"]:
        with pytest.raises(MessageError):
            SelfReport.from_json(bad)


def test_grade_round_trip() -> None:
    g = grade_session(summary("s", 1, 0, instability=1), SelfReport(A, J, "s", 0, pain=1))
    back = JointGrade.from_json(g.to_json())
    assert back == g
    assert back.grade in GRADES and json.loads(g.to_json())["disclaimer"] == NOT_A_DIAGNOSIS
    with pytest.raises(MessageError):
        JointGrade.from_json(b'{"athlete":"a","joint":"j","session":"s","t_ns":1,"grade":"fine","reasons":[]}')


def test_report_and_grade_topics() -> None:
    assert reports_topic(A, J) == "jointmon/v1/reports/ath-001/left_knee"
    assert grades_topic(A, J) == "jointmon/v1/grades/ath-001/left_knee"
    assert parse_reports_topic(reports_topic(A, J)) == (A, J)
    assert parse_grades_topic(grades_topic(A, J)) == (A, J)
    with pytest.raises(TopicError):
        parse_reports_topic("jointmon/v1/events/ath-001/left_knee")
    with pytest.raises(TopicError):
        reports_topic("ath/001", J)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _write_events(path: Path, session: str, clicks: int, t0_s: float) -> None:
    lines = []
    for k in range(clicks):
        e = ev("click", 1.0 + k * 50.0 / max(clicks, 1), session=session)
        rec = {"t_s": e.stream_t_s, **json.loads(e.to_json()), "t_ns": int((t0_s + e.stream_t_s) * 1e9)}
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def test_cli_grade_over_jsonl_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hist = tmp_path / "hist.sqlite"
    for i, n in enumerate([2, 3, 2]):
        _write_events(tmp_path / f"s{i}.jsonl", f"s{i}", n, t0_s=1e6 + i * 86400)
        assert main(["grade", str(tmp_path / f"s{i}.jsonl"), "--duration", "60", "--history", str(hist)]) == 0
    _write_events(tmp_path / "s3.jsonl", "s3", 14, t0_s=1e6 + 3 * 86400)
    out_json = tmp_path / "g.jsonl"
    assert main(["grade", str(tmp_path / "s3.jsonl"), "--duration", "60", "--history", str(hist), "--pain", "3",
                 "--grade-json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "ath-001 left_knee session s3: SEEK EVALUATION" in out
    assert "click rate 14/min, up from 2.3/min over the last 3 sessions" in out
    assert "pain 3/10 reported in a session with 14 joint sounds (pain with clicking)" in out
    assert "not a diagnosis" in out
    g = JointGrade.from_json(out_json.read_text().splitlines()[0])
    assert g.grade == "seek evaluation" and {r.flag for r in g.reasons} >= {"pain", "clicks_worsening"}


@pytest.mark.parametrize("argv", [
    ["grade", "F", "--pain", "11"], ["grade", "F", "--pain", "x"], ["grade", "F", "--swelling", "maybe"],
    ["checkin", "--athlete", A, "--joint", J, "--pain", "-1"],
])
def test_cli_rejects_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "pain is a whole number from 0 (none) to 10" in err or "yes or no" in err


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grade", str(tmp_path / "nope.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "click"}\n')
    assert main(["grade", str(bad), "--no-history"]) == 2
    assert main(["checkin", "--athlete", A, "--joint", J]) == 2
    assert main(["checkin", "--athlete", "ath/1", "--joint", J, "--pain", "1"]) == 2
    assert main(["analyze", "--pain", "2", "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database, just text that is long enough to be read as a header")
    _write_events(tmp_path / "ok.jsonl", "s1", 2, t0_s=1e6)
    assert main(["grade", str(tmp_path / "ok.jsonl"), "--history", str(not_db)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: cannot use as the athlete history" in err
    assert "no such file" in err and "bad.jsonl, line 1: not a jointmon event" in err
    assert "nothing to report" in err and "not a valid topic level" in err and "jointmon checkin" in err


# ---------------------------------------------------------------------------------------------
# live: self-reports over MQTT into the analysis service, grade published at session end
# ---------------------------------------------------------------------------------------------

def test_service_takes_self_reports_counts_malformed_and_publishes_grade(mosquitto, tmp_path: Path) -> None:
    from analysis.mqtt_service import AnalysisService
    from analysis.results_store import SqliteResults

    grades: list[JointGrade] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="grade-sub", protocol=mqtt.MQTTv311)
    sub.on_message = lambda c, u, m: grades.append(JointGrade.from_json(m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(GRADES_SUBSCRIPTION, qos=1)
    sub.loop_start()
    history = AthleteHistory(tmp_path / "hist.sqlite")
    service = AnalysisService(MqttSettings.from_url(mosquitto.url), SqliteResults(tmp_path / "r.sqlite"), "live-1",
                              history=history, grade_interval_s=0.05)
    service.start()
    try:
        good = SelfReport(A, J, "live-1", time.time_ns(), pain=6, swelling=False)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reporter", protocol=mqtt.MQTTv311)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        for topic, payload in [
            (reports_topic(A, J), good.to_json()),
            (reports_topic(A, J), b"{not json"),
            (reports_topic(A, J), b'{"athlete":"ath-001","joint":"left_knee","session":"s","t_ns":1,"pain":12}'),
            (reports_topic(A, "right_knee"), good.to_json()),  # the payload names another joint
            ("jointmon/v1/reports/too/many/levels", good.to_json()),
        ]:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        pub.loop_stop()
        # the sensors stream 6 s of squats through the gateway (the CLI's simulate command)
        assert main(["simulate", "--mqtt", mosquitto.url, "--duration", "6", "--fast", "--clicks", "2",
                     "--athlete", A, "--joint", J]) == 0
        assert service.wait_quiet(0.5, 30)
    finally:
        service.stop()
    deadline = time.monotonic() + 5
    while not any(g.final for g in grades) and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    interim = [g for g in grades if not g.final]
    assert interim, "no interim grade while the session ran"
    grades = [g for g in grades if g.final]

    c = service.counters
    assert c["reports"] == 1
    assert c["dropped_report_malformed"] == 2
    assert c["dropped_report_mismatch"] == 1
    assert c["dropped_report_bad_topic"] == 1
    assert len(grades) == 1
    g = grades[0]
    assert (g.athlete, g.joint, g.session, g.final) == (A, J, "live-1", True)
    assert g.grade == "seek evaluation" and g.figures["pain"] == 6
    assert abs(g.figures["duration_s"] - 6.0) < 0.5
    assert any(r.flag == "pain" for r in g.reasons)
    # the final grade and the report went into the history
    assert history.report(A, J, "live-1") == good
    assert [gr for _, gr in history.sessions(A, J)] == ["seek evaluation"]
    history.close()


def test_cli_checkin_publishes_a_self_report(mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    got: list[tuple[str, SelfReport]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="report-sub", protocol=mqtt.MQTTv311)
    sub.on_message = lambda c, u, m: got.append((m.topic, SelfReport.from_json(m.payload)))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("jointmon/v1/reports/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    try:
        assert main(["checkin", "--athlete", A, "--joint", J, "--session", "s-9", "--pain", "3", "--swelling",
                     "--source", "coach", "--mqtt", mosquitto.url]) == 0
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
    assert len(got) == 1
    topic, r = got[0]
    assert topic == reports_topic(A, J)
    assert (r.athlete, r.joint, r.session, r.pain, r.swelling, r.injury, r.source) == (A, J, "s-9", 3, True, None,
                                                                                       "coach")
    assert "reported" in capsys.readouterr().out
