"""Red-flag grading offline: of an ``analyze PATH`` result, a JSON-lines events file or a results file.

The rules are :mod:`analysis.red_flags`; the cross-session trend comes from
:mod:`analysis.athlete_history`. Used by ``jointmon analyze PATH`` (grade printed after the events)
and ``jointmon grade FILE``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from analysis.athlete_history import AthleteHistory, grade_with_history
from analysis.red_flags import RedFlagSettings, summarize
from jointmon.errors import JointmonError, MessageError
from jointmon.messages import JointEvent, JointGrade, SelfReport

if TYPE_CHECKING:
    from analysis.offline import OfflineResult

JointSession = tuple[str, str, str]  # (athlete, joint, session)


@dataclass(frozen=True)
class ReportArgs:
    """A self-report given on the command line; ``joint`` None: it applies to every graded joint."""

    pain: int | None = None
    swelling: bool | None = None
    injury: bool | None = None
    joint: str | None = None
    athlete: str | None = None

    def for_session(self, athlete: str, joint: str, session: str, t_ns: int) -> SelfReport | None:
        if self.pain is None and self.swelling is None and self.injury is None:
            return None
        if (self.joint and self.joint != joint) or (self.athlete and self.athlete != athlete):
            return None
        return SelfReport(athlete, joint, session, t_ns, self.pain, self.swelling, self.injury, "athlete")


@dataclass
class SessionEvents:
    """Events of one (athlete, joint, session) with the session's start (Unix ns) and length (s)."""

    key: JointSession
    events: list[JointEvent]
    t_ns: int
    duration_s: float
    duration_estimated: bool = False


def grade_sessions(sessions: Iterable[SessionEvents], report: ReportArgs | None = None,
                   history: AthleteHistory | None = None, settings: RedFlagSettings | None = None,
                   *, now_ns: int = 0) -> list[JointGrade]:
    """Grade each session (oldest first, so earlier files build the trend of later ones)."""
    s = settings or RedFlagSettings()
    out = []
    for se in sorted(sessions, key=lambda x: x.t_ns):
        athlete, joint, session = se.key
        summary = summarize(se.events, athlete, joint, session, se.duration_s, t_ns=se.t_ns, settings=s)
        rep = report.for_session(athlete, joint, session, now_ns) if report else None
        grade = grade_with_history(summary, rep, history, s, t_ns=now_ns)
        if se.duration_estimated:
            grade.figures["duration_estimated"] = True
        out.append(grade)
    return out


def sessions_from_offline(result: OfflineResult) -> list[SessionEvents]:
    """The joints of an offline result: every joint analysed, with or without events."""
    keys = set(result.reps) | {(e.athlete, e.joint) for e in result.events}
    return [SessionEvents((a, j, result.session), [e for e in result.events if (e.athlete, e.joint) == (a, j)],
                          int(result.origin_ns), float(result.duration_s))
            for a, j in sorted(keys)]


def _event_from_record(rec: dict[str, object]) -> JointEvent:
    """A :class:`JointEvent` from an ``analyze --out`` JSON line (or an events-topic message)."""
    return JointEvent.from_json(json.dumps(rec))


def sessions_from_file(path: str | Path, duration_s: float | None = None) -> list[SessionEvents]:
    """Sessions in a JSON-lines events file (``jointmon analyze PATH --out FILE``) or a SQLite
    results file (``results/analysis.sqlite``). Session length: ``duration_s`` if given; in a
    results file the span of the stored angle series; else estimated from the events (the last
    event's ``t_s``, a lower bound, flagged ``duration_estimated``)."""
    p = Path(path)
    if not p.is_file():
        raise JointmonError(f"{p}: no such file")
    with p.open("rb") as f:
        is_sqlite = f.read(16) == b"SQLite format 3\x00"
    grouped: defaultdict[JointSession, list[JointEvent]] = defaultdict(list)
    spans: dict[JointSession, tuple[int, int]] = {}
    t_rel: dict[JointSession, float] = {}
    if is_sqlite:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            for (raw,) in db.execute("SELECT json FROM joint_event ORDER BY t_ns"):
                e = JointEvent.from_json(raw)
                grouped[(e.athlete, e.joint, e.session)].append(e)
            for a, j, s, t0, t1 in db.execute("SELECT athlete, joint, session, min(t_ns), max(t_ns) FROM joint_angle "
                                              "GROUP BY athlete, joint, session"):
                spans[(a, j, s)] = (int(t0), int(t1))
                grouped.setdefault((a, j, s), [])
        except sqlite3.DatabaseError as exc:
            raise JointmonError(f"{p}: not a jointmon results file ({exc})") from exc
        finally:
            db.close()
    else:
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    e = _event_from_record(rec)
                except (ValueError, MessageError) as exc:
                    raise JointmonError(f"{p}, line {n}: not a jointmon event ({exc})") from exc
                key = (e.athlete, e.joint, e.session)
                grouped[key].append(e)
                t_s = float(rec.get("t_s", e.stream_t_s))
                t_rel[key] = max(t_rel.get(key, 0.0), t_s + float(e.details.get("duration_s", 0.0) or 0.0))
                t0 = e.t_ns - round(t_s * 1e9)
                spans[key] = (min(spans.get(key, (t0, t0))[0], t0), 0)
    out = []
    for key, events in grouped.items():
        start = spans.get(key, (min((e.t_ns for e in events), default=0), 0))[0]
        if duration_s is not None:
            out.append(SessionEvents(key, events, start, duration_s))
        elif is_sqlite and key in spans:
            out.append(SessionEvents(key, events, start, (spans[key][1] - spans[key][0]) / 1e9))
        else:
            out.append(SessionEvents(key, events, start, t_rel.get(key, 0.0), duration_estimated=True))
    return out


def print_grades(grades: Sequence[JointGrade], file: TextIO) -> None:
    """Plain-words grades, one block per joint."""
    for g in grades:
        print(g.text(), file=file)
