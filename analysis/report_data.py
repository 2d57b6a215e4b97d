"""What a session report shows, as data: per joint the angle curves, the event timeline, the reps (ROM, peak
valgus/FPPA, joint sounds per rep), the red-flag checklist of the clinical table and the grade, and where the
session has labels the evaluation harness's scores against them.

A report is built from an offline analysis (:func:`analysis.offline.analyze_path`'s result, or
:func:`analyze_with_progress`) or from the stored results of an earlier run (:func:`load_results_file`: a SQLite
results file or JSON lines from ``jointmon analyze PATH --out``). Times in the report are session seconds (``t_s``,
0 = the session start, the labels' axis); angles in degrees. Rendering: :mod:`analysis.report_plots` (PNG figures)
and :mod:`analysis.report_html`; the command: :mod:`analysis.session_report`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.athlete_history import AthleteHistory, grade_with_history
from analysis.evaluation import labels_and_truth, score_joint  # the harness's own scoring: one, not two
from analysis.evaluation_metrics import DEFAULT_TOLERANCE_S, Score, joint_kind
from analysis.grading import ReportArgs, SessionEvents, sessions_from_file, sessions_from_offline
from analysis.offline import OfflineResult, analyze_path
from analysis.red_flags import SOUND_TYPES, RedFlagSettings, summarize
from analysis.results_store import ANGLE_COLUMNS
from analysis.rom_tracker import RomSettings
from jointmon.errors import JointmonError
from jointmon.messages import GRADES, JointEvent, JointGrade

BENIGN, WATCH, SEEK = GRADES
# Event types in the order the report lists them (reps last: they are the frame, not a finding).
EVENT_ORDER = ("click", "snap", "crepitus", "valgus", "instability", "locking", "rep")
RESULTS_SUFFIXES = (".jsonl", ".json", ".ndjson", ".sqlite", ".sqlite3", ".db")
MAIN_ANGLE = {"knee": "flexion_deg", "shoulder": "elevation_deg"}  # the rep-driving angle of each joint kind

# The red-flag table of CLINICAL.md: sign, likely benign, concerning (seek evaluation), and which grade reasons
# (analysis.red_flags flags) belong to it. Pain and swelling can only be reported; the rest is measured.
CLINICAL_ROWS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("pain", "self-reported", "none", "during or after the click", ("pain",)),
    ("swelling", "self-reported", "none", "visible puffiness or warmth", ("swelling",)),
    ("instability", "measured", "no buckling or giving way", 'the joint "gives out"', ("instability",)),
    ("range of motion", "measured", "full and smooth", "stiffness, locking, a knee that will not fully straighten",
     ("locking",)),
    ("frequency", "measured", "occasional, predictable", "new, worsening, or spreading to other joints",
     ("clicks_new", "clicks_worsening", "clicks_spreading")),
    ("after an injury", "self-reported", "no injury before the clicking", "a click that started after an injury",
     ("injury",)),
)


@dataclass(frozen=True)
class RepRow:
    """One rep: times in session seconds, angles in degrees (None where unknown, e.g. valgus before the
    sensor-to-segment calibration); ``events`` counts the other events inside the rep, by type."""

    index: int
    t_start_s: float
    t_end_s: float
    t_peak_s: float | None
    peak_deg: float
    min_deg: float | None
    rom_deg: float | None
    peak_valgus_deg: float | None
    fppa_deg: float | None
    events: dict[str, int] = field(default_factory=dict)

    @property
    def sounds(self) -> int:
        return sum(self.events.get(t, 0) for t in SOUND_TYPES)


@dataclass(frozen=True)
class ChecklistRow:
    """One row of the red-flag checklist: the clinical table's sign, how it is known (measured /
    self-reported), what this session shows in plain words, the level the grade gave it (None: unknown, not
    reported) and the grade's reasons behind that level."""

    sign: str
    source: str
    found: str
    level: str | None
    benign: str
    concerning: str
    reasons: tuple[str, ...] = ()


@dataclass
class JointReport:
    """One joint of one athlete in the session.

    ``t_s`` (n,) session seconds and ``angles`` {name: deg (n,)} at the stored angle rate (empty for an events-only
    source); ``events`` every event of this joint in time order; ``score`` the harness's score against the
    session's labels (None without labels); ``labels`` the labelled events per type.
    """

    athlete: str
    joint: str
    session: str
    origin_ns: int
    duration_s: float
    t_s: np.ndarray
    angles: dict[str, np.ndarray]
    events: list[JointEvent]
    grade: JointGrade
    score: Score | None = None
    labels: Counter[str] = field(default_factory=Counter)
    usual_rom_deg: float | None = None  # the athlete's usual ROM, if known (deg)
    duration_estimated: bool = False

    @property
    def kind(self) -> str:
        return joint_kind(self.joint)

    @property
    def main_angle(self) -> str:
        """The driving angle's name (knee flexion, shoulder elevation); the first angle for other joints."""
        name = MAIN_ANGLE.get(self.kind, "")
        return name if name in self.angles or not self.angles else next(iter(self.angles))

    def event_t_s(self, e: JointEvent) -> float:
        return (e.t_ns - self.origin_ns) / 1e9

    def of_type(self, *types: str) -> list[JointEvent]:
        return [e for e in self.events if e.type in types]

    @property
    def counts(self) -> Counter[str]:
        return Counter(e.type for e in self.events)

    @property
    def sounds(self) -> int:
        c = self.counts
        return sum(c[t] for t in SOUND_TYPES)

    @property
    def sound_rate_per_min(self) -> float:
        return self.sounds / (self.duration_s / 60.0) if self.duration_s > 0 else 0.0

    def angle_at(self, e: JointEvent) -> float | None:
        """The driving angle at an event (deg): the stored curve at its time, else the angle the detector noted."""
        x = self.angles.get(self.main_angle) if self.angles else None
        t = self.event_t_s(e)
        if x is not None and self.t_s.size and self.t_s[0] <= t <= self.t_s[-1]:
            ok = np.isfinite(x)
            if ok.any():
                v = float(np.interp(t, self.t_s[ok], x[ok]))
                if np.isfinite(v):
                    return v
        noted = e.details.get("flexion_deg")
        return float(noted) if isinstance(noted, int | float) and np.isfinite(noted) else None

    def reps(self) -> list[RepRow]:
        """The reps from the "rep" events (what every source carries), with the other events inside each."""
        rep_events = self.of_type("rep")
        starts = np.array([self.event_t_s(e) for e in rep_events])
        ends = starts + np.array([float(e.details.get("duration_s") or 0.0) for e in rep_events])
        inside: list[Counter[str]] = [Counter() for _ in rep_events]
        for e, i in zip(self.events, self.rep_of_events(), strict=True):
            if i is not None and e.type != "rep":
                inside[i][e.type] += 1
        rows = []
        for k, (e, t0, t1) in enumerate(zip(rep_events, starts, ends, strict=True)):
            d = e.details
            t_peak = d.get("t_peak_ns")
            rows.append(RepRow(int(d.get("rep", k + 1)), float(t0), float(t1),
                               (int(t_peak) - self.origin_ns) / 1e9 if t_peak is not None else None,
                               float(e.magnitude), _num(d.get("min_flexion_deg")), _num(d.get("rom_deg")),
                               _num(d.get("peak_valgus_deg")), _num(d.get("fppa_deg")), dict(inside[k])))
        return rows

    def rep_of_events(self) -> list[int | None]:
        """For each event, the position (0-based, in :meth:`reps`) of the rep it falls in, None between reps.

        Decided here on the finished reps; the live ``details["rep"]`` of a sound is what was known when it was
        reported (a sound early in the session's first rep says 0: that rep was not complete yet)."""
        rep_events = self.of_type("rep")
        starts = np.array([self.event_t_s(e) for e in rep_events])
        ends = starts + np.array([float(e.details.get("duration_s") or 0.0) for e in rep_events])
        t = np.array([self.event_t_s(e) for e in self.events])
        k = np.searchsorted(starts, t, side="right") - 1
        ok = (k >= 0) & (ends[np.clip(k, 0, None)] >= t) if starts.size else np.zeros(t.size, bool)
        return [int(i) if good else None for i, good in zip(k, ok, strict=True)]

    def rom_summary(self) -> tuple[float, float, float] | None:
        """(median, min, max) ROM over the reps (deg), None without reps of known ROM."""
        rom = np.array([r.rom_deg for r in self.reps() if r.rom_deg is not None])
        return (float(np.median(rom)), float(rom.min()), float(rom.max())) if rom.size else None

    def usual_rom(self) -> tuple[float | None, str]:
        """The usual ROM to compare the reps with (deg) and where it comes from."""
        if self.usual_rom_deg is not None:
            return self.usual_rom_deg, "the athlete's usual range (given)"
        summary = self.rom_summary()
        if summary is None:
            return None, ""
        return summary[0], "median of this session's reps; the athlete's usual range was not given"

    def checklist(self) -> list[ChecklistRow]:
        """The red-flag table, row by row, with what was measured and what was self-reported."""
        fig = self.grade.figures
        found = {
            "pain": "not reported" if fig.get("pain") is None else f"{fig['pain']}/10",
            "swelling": _yes_no_reported(fig.get("swelling")),
            "after an injury": _yes_no_reported(fig.get("injury")),
            "instability": self._instability_text(),
            "range of motion": self._rom_text(),
            "frequency": self._frequency_text(),
        }
        rows = []
        for sign, source, benign, concerning, flags in CLINICAL_ROWS:
            reasons = tuple(r.text for r in self.grade.reasons if r.flag in flags)
            levels = [r.level for r in self.grade.reasons if r.flag in flags]
            if levels:
                level: str | None = max(levels, key=GRADES.index)
            elif source == "self-reported" and found[sign] == "not reported":
                level = None
            else:
                level = BENIGN
            rows.append(ChecklistRow(sign, source, found[sign], level, benign, concerning, reasons))
        return rows

    def _instability_text(self) -> str:
        ev = self.of_type("instability")
        if not ev:
            return "no giving-way episode measured"
        at = ", ".join(f"{self.event_t_s(e):.1f} s" for e in ev)
        return f"{_plural(len(ev), 'giving-way episode')} measured (at {at})"

    def _rom_text(self) -> str:
        lock = self.of_type("locking")
        parts = [f"{_plural(len(lock), 'locking or restricted-motion episode')} measured" if lock
                 else "no locking or restricted-motion episode measured"]
        reps, summary = self.reps(), self.rom_summary()
        if summary is not None:
            med, lo, hi = summary
            parts.append(f"ROM {lo:.0f}-{hi:.0f} deg per rep (median {med:.0f}) over {_plural(len(reps), 'rep')}")
        mins = [r.min_deg for r in reps if r.min_deg is not None]
        if mins and self.kind == "knee":
            parts.append(f"least extension between reps {max(mins):.0f} deg flexion (0 = straight)")
        return "; ".join(parts)

    def _frequency_text(self) -> str:
        c = self.counts
        kinds = ", ".join(f"{c[t]} {t}" if t == "crepitus" else _plural(c[t], t) for t in SOUND_TYPES if c[t])
        text = (f"{_plural(self.sounds, 'joint sound')} ({kinds}), {self.sound_rate_per_min:.1f}/min"
                if self.sounds else "no joint sound measured")
        fig = self.grade.figures
        n_hist = int(fig.get("history_sessions", 0) or 0)
        if "baseline_sound_rate_per_min" in fig:
            text += f"; earlier sessions {fig['baseline_sound_rate_per_min']:.1f}/min (last {n_hist})"
        else:
            text += f"; no trend yet ({_plural(n_hist, 'earlier session')} on file)"
        return text


@dataclass
class SessionReport:
    """Everything one report shows: ``source`` the analysed path or results file; ``joints`` one per (athlete,
    joint); ``problems`` the data-path counters worth a look (dropped frames, lost samples); ``notes`` plain-words
    remarks on the data (e.g. an events-only source)."""

    source: str
    session: str
    joints: list[JointReport]
    problems: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    has_labels: bool = False

    @property
    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for j in self.joints:
            total.update(j.counts)
        return total

    @property
    def score(self) -> Score | None:
        """The session's score against its labels, summed over joints as the harness sums it."""
        if not self.has_labels:
            return None
        total = Score(sessions=1, duration_s=max((j.duration_s for j in self.joints), default=0.0))
        for j in self.joints:
            if j.score is not None:
                total.add(j.score)
        return total


# ------------------------------------------------------------------------------------------------ loading


def is_results_file(path: Path) -> bool:
    """A SQLite results file or JSON lines of events (by content for SQLite, by suffix for JSON lines)."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        if f.read(16) == b"SQLite format 3\x00":
            return True
    return path.suffix.lower() in RESULTS_SUFFIXES


def analyze_with_progress(path: str | Path, on_progress: Callable[[float, float], None] | None = None
                          ) -> OfflineResult:
    """:func:`analysis.offline.analyze_path` with ``on_progress(seconds_done, seconds_total)``."""
    return analyze_path(path, on_progress=on_progress)


def report_from_offline(result: OfflineResult, self_report: ReportArgs | None = None,
                        history: AthleteHistory | None = None, *, usual_rom_deg: float | None = None,
                        settings: RedFlagSettings | None = None, now_ns: int = 0) -> SessionReport:
    """The report of an offline analysis: every joint analysed, graded, and scored where there are labels
    (per joint, exactly as :func:`analysis.evaluation.evaluate_session` scores it)."""
    labels, truth, meta = labels_and_truth(result)
    records = [result.event_record(e) for e in result.events]
    joints = []
    for se in sessions_from_offline(result):
        athlete, joint, _ = se.key
        t_ns, angles = result.angles.get((athlete, joint), (np.zeros(0, np.int64), {}))
        score = None
        if labels:
            score = score_joint(result, joint, labels, truth, meta, records, DEFAULT_TOLERANCE_S)
        joints.append(_joint_report(se, t_ns, angles, self_report, history, settings, now_ns, usual_rom_deg,
                                    score, Counter(lb["type"] for lb in labels if lb["joint"] == joint)))
    problems = {k: v for k, v in result.counters.items() if (k.startswith("dropped") or k == "frames_missing") and v}
    report = SessionReport(result.source or result.session, result.session, joints, problems,
                           has_labels=bool(labels))
    unanalysed = sorted({lb["joint"] for lb in labels} - {j.joint for j in joints})
    if unanalysed:
        report.notes.append(f"labelled joints with no analysed data: {', '.join(unanalysed)}")
    return report


def load_results_file(path: str | Path, session: str | None = None, duration_s: float | None = None
                      ) -> tuple[list[SessionEvents], dict[tuple[str, str, str], tuple[np.ndarray, dict]]]:
    """The sessions of a results file (SQLite) or JSON-lines events file, narrowed to ``session``, and the angle
    series of each (SQLite only: JSON lines hold events, no angles). Several sessions and no ``session``: a
    :class:`JointmonError` listing them."""
    p = Path(path)
    sessions = sessions_from_file(p, duration_s)
    ids = sorted({s.key[2] for s in sessions})
    if session is not None:
        sessions = [s for s in sessions if s.key[2] == session]
        if not sessions:
            raise JointmonError(f"{p}: no session {session!r} (sessions: {', '.join(ids) or 'none'})")
    elif len(ids) > 1:
        raise JointmonError(f"{p} holds {len(ids)} sessions; choose one with --session ID: {', '.join(ids)}")
    if not sessions:
        raise JointmonError(f"{p}: no events or sessions in it")
    angles: dict[tuple[str, str, str], tuple[np.ndarray, dict]] = {}
    with p.open("rb") as f:
        is_sqlite = f.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            for s in sessions:
                rows = db.execute(f"SELECT t_ns, {', '.join(ANGLE_COLUMNS)} FROM joint_angle WHERE athlete = ? AND "
                                  "joint = ? AND session = ? ORDER BY t_ns", s.key).fetchall()
                arr = np.array(rows, dtype=float).reshape(-1, 1 + len(ANGLE_COLUMNS))  # NULL -> NaN
                named = {c: arr[:, i + 1] for i, c in enumerate(ANGLE_COLUMNS) if np.isfinite(arr[:, i + 1]).any()}
                angles[s.key] = (arr[:, 0].astype(np.int64), named)
        except sqlite3.DatabaseError as exc:
            raise JointmonError(f"{p}: not a jointmon results file ({exc})") from exc
        finally:
            db.close()
    return sessions, angles


def report_from_results(path: str | Path, session: str | None = None, self_report: ReportArgs | None = None,
                        history: AthleteHistory | None = None, *, duration_s: float | None = None,
                        usual_rom_deg: float | None = None, settings: RedFlagSettings | None = None,
                        now_ns: int = 0) -> SessionReport:
    """The report of stored results (SQLite results file or JSON lines): no labels, so no scores."""
    sessions, angles = load_results_file(path, session, duration_s)
    joints = [_joint_report(se, *angles.get(se.key, (np.zeros(0, np.int64), {})), self_report, history, settings,
                            now_ns, usual_rom_deg) for se in sorted(sessions, key=lambda s: s.key)]
    report = SessionReport(str(path), sessions[0].key[2], joints)
    if not angles:
        report.notes.append("JSON lines hold events only: no angle curves (a results file or the recording has "
                            "them); sounds are placed at the angle their detector noted")
    if any(j.duration_estimated for j in joints):
        report.notes.append("session length estimated from the last event (give --duration S for exact rates)")
    return report


def _joint_report(se: SessionEvents, t_ns: np.ndarray, angles: dict[str, np.ndarray],
                  self_report: ReportArgs | None, history: AthleteHistory | None,
                  settings: RedFlagSettings | None, now_ns: int, usual_rom_deg: float | None,
                  score: Score | None = None, labels: Counter[str] | None = None) -> JointReport:
    athlete, joint, session = se.key
    origin = se.t_ns
    summary = summarize(se.events, athlete, joint, session, se.duration_s, t_ns=origin, settings=settings)
    rep = self_report.for_session(athlete, joint, session, now_ns) if self_report else None
    # record=False: a report reads the history (trend), it does not add the session to it.
    grade = grade_with_history(summary, rep, history, settings, t_ns=now_ns, record=False)
    events = sorted(se.events, key=lambda e: (e.t_ns, e.type))
    return JointReport(athlete, joint, session, origin, se.duration_s, (np.asarray(t_ns, np.int64) - origin) / 1e9,
                       {k: np.asarray(v, float) for k, v in angles.items()}, events, grade, score,
                       labels or Counter(), usual_rom_deg, se.duration_estimated)


# ------------------------------------------------------------------------------------------------ helpers


def restricted_below(usual_rom_deg: float) -> float:
    """ROM below which a rep counts as restricted against ``usual_rom_deg`` (the locking detector's margin)."""
    return usual_rom_deg - RomSettings().range_short_deg


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) else None


def _plural(n: int, one: str) -> str:
    return f"{n} {one if n == 1 else one + 's'}"


def _yes_no_reported(v: object) -> str:
    return "not reported" if v is None else ("yes" if v else "no")
