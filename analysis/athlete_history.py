"""Per-athlete, per-joint session history (SQLite): what red-flag trends are judged against.

One row per (athlete, joint, session): the session's figures (:class:`SessionSummary`), its
self-report and its grade. Recording the same session again replaces its row, so re-analysing a
recording does not count it twice. Athlete ids are pseudonyms (``ath-001``): this is health data.

Default file: ``results/athlete_history.sqlite`` (:data:`DEFAULT_HISTORY_PATH`); readable with
any SQLite tool.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from analysis.red_flags import RedFlagSettings, SessionSummary, grade_session
from jointmon.errors import JointmonError
from jointmon.messages import JointGrade, SelfReport

DEFAULT_HISTORY_PATH = Path("results/athlete_history.sqlite")

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_summary (
    athlete TEXT NOT NULL, joint TEXT NOT NULL, session TEXT NOT NULL,
    t_ns INTEGER NOT NULL,          -- session start, Unix ns
    duration_s REAL NOT NULL,       -- analysed length, s
    counts TEXT NOT NULL,           -- JSON {event type: count}
    sound_rate_per_min REAL NOT NULL,
    exercise TEXT, instability_exercises TEXT,
    grade TEXT, grade_json TEXT,
    PRIMARY KEY (athlete, joint, session));
CREATE TABLE IF NOT EXISTS self_report (
    athlete TEXT NOT NULL, joint TEXT NOT NULL, session TEXT NOT NULL,
    t_ns INTEGER NOT NULL, pain INTEGER, swelling INTEGER, injury INTEGER, source TEXT NOT NULL,
    PRIMARY KEY (athlete, joint, session));
CREATE INDEX IF NOT EXISTS summary_time ON session_summary (athlete, joint, t_ns);
"""


def _opt_bool(v: int | None) -> bool | None:
    return None if v is None else bool(v)


class AthleteHistory:
    """Session history of every athlete and joint in one SQLite file (thread-safe)."""

    def __init__(self, path: str | Path = DEFAULT_HISTORY_PATH) -> None:
        """Open (or create) the history file; :class:`JointmonError` if it is not one."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JointmonError(f"{self.path}: cannot use as the athlete history ({exc})") from None
        self._lock = threading.Lock()

    def record(self, summary: SessionSummary, grade: JointGrade | None = None) -> None:
        """Add (or replace) one session of one joint, with its grade if graded."""
        row = (summary.athlete, summary.joint, summary.session, int(summary.t_ns), float(summary.duration_s),
               json.dumps(dict(summary.counts), sort_keys=True), summary.sound_rate_per_min, summary.exercise,
               json.dumps(list(summary.instability_exercises)), grade.grade if grade else None,
               grade.to_json().decode() if grade else None)
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO session_summary VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def save_report(self, report: SelfReport) -> None:
        """Keep a self-report; a later one for the same (athlete, joint, session) replaces it."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO self_report VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (report.athlete, report.joint, report.session, report.t_ns, report.pain,
                              report.swelling, report.injury, report.source))

    def report(self, athlete: str, joint: str, session: str) -> SelfReport | None:
        """The self-report of one session of one joint, if there is one."""
        with self._lock:
            r = self._db.execute("SELECT athlete, joint, session, t_ns, pain, swelling, injury, source FROM "
                                 "self_report WHERE athlete = ? AND joint = ? AND session = ?",
                                 (athlete, joint, session)).fetchone()
        if r is None:
            return None
        return SelfReport(r[0], r[1], r[2], r[3], r[4], _opt_bool(r[5]), _opt_bool(r[6]), r[7])

    @staticmethod
    def _summary(r: tuple) -> SessionSummary:  # type: ignore[type-arg]
        return SessionSummary(r[0], r[1], r[2], int(r[3]), float(r[4]), json.loads(r[5]), r[6],
                              tuple(json.loads(r[7] or "[]")))

    _COLUMNS = "athlete, joint, session, t_ns, duration_s, counts, exercise, instability_exercises"

    def previous(self, athlete: str, joint: str, before_t_ns: int, n: int = 10,
                 exclude_session: str | None = None) -> list[SessionSummary]:
        """Up to ``n`` sessions of (athlete, joint) that started before ``before_t_ns``, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM session_summary WHERE athlete = ? AND joint = ? "
                                    "AND t_ns < ? AND session != ? ORDER BY t_ns DESC LIMIT ?",
                                    (athlete, joint, int(before_t_ns), exclude_session or "", n)).fetchall()
        return [self._summary(r) for r in reversed(rows)]

    def latest_other_joints(self, athlete: str, joint: str,
                            before_t_ns: int | None = None) -> dict[str, SessionSummary]:
        """The latest session (started at or before ``before_t_ns``, if given) of each other joint of ``athlete``."""
        limit = (1 << 62) if before_t_ns is None else int(before_t_ns)
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM session_summary WHERE athlete = ? AND joint != ? "
                                    "AND t_ns <= ? ORDER BY t_ns", (athlete, joint, limit)).fetchall()
        return {r[1]: self._summary(r) for r in rows}  # later rows overwrite earlier ones

    def sessions(self, athlete: str, joint: str) -> list[tuple[SessionSummary, str | None]]:
        """Every recorded session of (athlete, joint) with its grade, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS}, grade FROM session_summary WHERE athlete = ? "
                                    "AND joint = ? ORDER BY t_ns", (athlete, joint)).fetchall()
        return [(self._summary(r[:8]), r[8]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AthleteHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grade_with_history(summary: SessionSummary, report: SelfReport | None = None,
                       history: AthleteHistory | None = None, settings: RedFlagSettings | None = None, *,
                       t_ns: int = 0, final: bool = True, record: bool = True) -> JointGrade:
    """Grade one session of one joint against its history, and (``record``, final grades only) add it.

    Without ``report``, the report stored in ``history`` for this session is used; a given report is
    stored. Without ``history`` there is no trend, only this session's flags.
    """
    s = settings or RedFlagSettings()
    earlier: list[SessionSummary] = []
    others: dict[str, SessionSummary] = {}
    if history is not None:
        if report is None:
            report = history.report(summary.athlete, summary.joint, summary.session)
        elif record:
            history.save_report(report)
        earlier = history.previous(summary.athlete, summary.joint, summary.t_ns, max(s.history_sessions,
                                   s.rising_sessions_seek), exclude_session=summary.session)
        others = history.latest_other_joints(summary.athlete, summary.joint, summary.t_ns)
    grade = grade_session(summary, report, earlier, others, s, t_ns=t_ns, final=final)
    if history is not None and record and final:
        history.record(summary, grade)
    return grade
