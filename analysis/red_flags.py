"""Red-flag grading of one joint in one session: benign / watch / seek evaluation, with reasons.

The rules follow the red-flag table of ``CLINICAL.md`` (the clinical background of jointmon)::

    sign             likely benign                 concerning: seek evaluation
    pain             none                          during or after the click
    swelling         none                          visible puffiness or warmth
    instability      no buckling or giving way     the joint "gives out"
    range of motion  full and smooth               stiffness, locking, will not fully straighten
    frequency        occasional, predictable       new, worsening, or spreading to other joints

Pain, swelling and "started after an injury" cannot be sensed: they come from a
:class:`jointmon.messages.SelfReport`. Instability, locking and joint sounds are the analysis's
events; their frequency trend is judged against earlier sessions of the same athlete and joint
(:mod:`analysis.athlete_history`). Everything here works on plain inputs (event lists, a report,
earlier :class:`SessionSummary` s), so the offline CLI and the live service grade identically.

jointmon never diagnoses: every grade carries :data:`jointmon.messages.NOT_A_DIAGNOSIS`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from jointmon.messages import GRADES, GradeReason, JointEvent, JointGrade, SelfReport

BENIGN, WATCH, SEEK = GRADES
SOUND_TYPES = ("click", "snap", "crepitus")  # joint sounds: their rate is the "frequency" row


@dataclass(frozen=True)
class RedFlagSettings:
    """Thresholds of the grading rules (the documented settings; units in the names).

    Pain is on the 0..10 numeric rating scale; rates are joint sounds (click + snap + crepitus
    events) per minute of session; "history" is the earlier sessions of the same athlete and joint.
    """

    # pain (self-reported): any pain in a session with joint sounds is "pain with the click"
    pain_watch_min: int = 1  # reported pain >= this: at least watch
    pain_seek_min: int = 4  # reported pain >= this: seek evaluation even without joint sounds
    pain_with_sounds_seek_min: int = 1  # pain >= this in a session with >= 1 joint sound: seek evaluation
    # instability: the joint "gives out"
    instability_seek_events: int = 1  # giving-way episodes per session for seek evaluation
    # range of motion: locking / a knee that stops short of its usual range
    locking_watch_events: int = 1  # one restricted rep may be a one-off: watch
    locking_seek_events: int = 2  # repeated locking in one session: seek evaluation
    # frequency trend of joint sounds across sessions
    history_sessions: int = 3  # baseline = mean rate over at most this many earlier sessions
    min_history_sessions: int = 2  # fewer earlier sessions: no trend is judged
    quiet_max_rate_per_min: float = 0.5  # a joint below this in every baseline session was quiet
    new_min_rate_per_min: float = 2.0  # a quiet joint now at >= this: new clicking (watch)
    worsening_ratio: float = 2.0  # rate >= ratio x baseline ...
    worsening_min_increase_per_min: float = 3.0  # ... and >= baseline + this: worsening (watch)
    rising_sessions_seek: int = 4  # worsening and rising in each of this many sessions (incl. this): seek
    spreading_min_rate_per_min: float = 2.0  # another joint of the athlete sounding at >= this: spreading
    steady_max_ratio: float = 1.5  # rate within baseline / ratio .. baseline x ratio: steady (reassuring)
    # form (not a red flag, a coaching note)
    valgus_note_episodes: int = 3  # dynamic valgus episodes per session worth a note
    min_event_confidence: float = 0.0  # events below this confidence are not counted


@dataclass(frozen=True)
class SessionSummary:
    """The figures of one joint in one session that grading needs (and history keeps).

    ``t_ns``: wall clock (Unix ns) of the session start, for ordering sessions; ``duration_s``:
    analysed length of the session, s; ``counts``: events per type; ``exercise``: what was trained,
    if known (used in the wording); ``instability_exercises``: exercise names noted on the
    instability events, if any.
    """

    athlete: str
    joint: str
    session: str
    t_ns: int
    duration_s: float
    counts: Mapping[str, int] = field(default_factory=dict)
    exercise: str | None = None
    instability_exercises: tuple[str, ...] = ()

    @property
    def sounds(self) -> int:
        """Joint-sound events (click + snap + crepitus) in the session."""
        return sum(int(self.counts.get(t, 0)) for t in SOUND_TYPES)

    @property
    def sound_rate_per_min(self) -> float:
        """Joint sounds per minute; 0 for a session of no length."""
        return self.sounds / (self.duration_s / 60.0) if self.duration_s > 0 else 0.0


def summarize(events: Iterable[JointEvent], athlete: str, joint: str, session: str, duration_s: float, *,
              t_ns: int = 0, exercise: str | None = None,
              settings: RedFlagSettings | None = None) -> SessionSummary:
    """Count the events of one (athlete, joint, session) into a :class:`SessionSummary`.

    Events of other joints, athletes or sessions and events below ``min_event_confidence`` are
    ignored. ``duration_s`` is the analysed session length in seconds.
    """
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a finite number >= 0, not {duration_s!r}")
    s = settings or RedFlagSettings()
    counts: Counter[str] = Counter()
    where: list[str] = []
    for e in events:
        if (e.athlete, e.joint, e.session) != (athlete, joint, session) or e.confidence < s.min_event_confidence:
            continue
        counts[e.type] += 1
        if e.type == "instability" and isinstance(e.details.get("exercise"), str):
            where.append(e.details["exercise"])
    return SessionSummary(athlete, joint, session, t_ns, float(duration_s), dict(counts), exercise,
                          tuple(dict.fromkeys(where)))


def _rate(x: float) -> str:
    """A rate per minute in plain words: whole numbers from 10 up, one decimal below."""
    return f"{x:.0f}/min" if x >= 10 or x == int(x) else f"{x:.1f}/min"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _exercise(name: str) -> str:
    """``step_down`` -> ``step-downs``: an exercise name for "during ..."."""
    words = name.strip().replace("_", "-").replace(" ", "-")
    return words if words.endswith("s") else words + "s"


def _sound_label(counts: Mapping[str, int]) -> str:
    """"click rate" when every joint sound was a click, else "joint-sound rate (2 clicks, 8 snaps)"."""
    parts = [_plural(int(counts.get(t, 0)), t) if t != "crepitus" else f"{int(counts.get(t, 0))} crepitus"
             for t in SOUND_TYPES if counts.get(t)]
    if not any(counts.get(t) for t in SOUND_TYPES[1:]):
        return "click rate"
    return f"joint-sound rate ({', '.join(parts)})"


def grade_session(current: SessionSummary, report: SelfReport | None = None,
                  history: Sequence[SessionSummary] = (), other_joints: Mapping[str, SessionSummary] | None = None,
                  settings: RedFlagSettings | None = None, *, t_ns: int = 0, final: bool = True) -> JointGrade:
    """Grade ``current`` against the red-flag table.

    ``report``: the self-report of this (athlete, joint, session), if any; ``history``: earlier
    sessions of the same athlete and joint, oldest first (later ones and ``current`` itself are
    ignored); ``other_joints``: the latest session of each other joint of the same athlete;
    ``t_ns``: wall clock of the grading (Unix ns). The grade is the highest level among the reasons.
    """
    s = settings or RedFlagSettings()
    reasons: list[GradeReason] = []
    rate = current.sound_rate_per_min
    figures: dict[str, object] = {"duration_s": round(current.duration_s, 1), "counts": dict(current.counts),
                                  "sound_rate_per_min": round(rate, 2)}

    # --- pain, swelling, injury: self-reported -------------------------------------------------
    if report is None or (report.pain is None and report.swelling is None):
        reasons.append(GradeReason("info", BENIGN, "pain and swelling were not reported for this session: only "
                                                   "the athlete can tell them, and they are red flags"))
    if report is not None:
        figures.update(pain=report.pain, swelling=report.swelling, injury=report.injury)
        if report.pain is not None and report.pain >= s.pain_watch_min:
            if current.sounds and report.pain >= s.pain_with_sounds_seek_min:
                reasons.append(GradeReason("pain", SEEK, f"pain {report.pain}/10 reported in a session with "
                                           f"{_plural(current.sounds, 'joint sound')} (pain with clicking)"))
            elif report.pain >= s.pain_seek_min:
                reasons.append(GradeReason("pain", SEEK, f"pain {report.pain}/10 reported"))
            else:
                reasons.append(GradeReason("pain", WATCH, f"mild pain {report.pain}/10 reported"))
        if report.swelling:
            reasons.append(GradeReason("swelling", SEEK, "swelling (visible puffiness or warmth) reported"))
        if report.injury:
            if current.sounds:
                reasons.append(GradeReason("injury", SEEK, "the clicking started after an injury (reported)"))
            else:
                reasons.append(GradeReason("injury", WATCH, "a recent injury was reported"))

    # --- instability and range of motion: measured ------------------------------------------
    n_inst = int(current.counts.get("instability", 0))
    if n_inst >= s.instability_seek_events and n_inst > 0:
        where = current.instability_exercises or ((current.exercise,) if current.exercise else ())
        during = f" during {', '.join(_exercise(w) for w in where)}" if where else ""
        reasons.append(GradeReason("instability", SEEK, f"{_plural(n_inst, 'giving-way episode')} (instability)"
                                   f"{during}: the joint gave out"))
    n_lock = int(current.counts.get("locking", 0))
    if n_lock >= s.locking_watch_events and n_lock > 0:
        level = SEEK if n_lock >= s.locking_seek_events else WATCH
        reasons.append(GradeReason("locking", level, f"{_plural(n_lock, 'locking or restricted-motion episode')} "
                                   "(the joint stopped short of its usual range)"))

    # --- frequency of joint sounds: new, worsening, spreading (across sessions) ----------------
    earlier = sorted((h for h in history if h.t_ns < current.t_ns and h.session != current.session),
                     key=lambda h: h.t_ns)
    base = earlier[-s.history_sessions:]
    label = _sound_label(current.counts)
    figures["history_sessions"] = len(base)
    trend_known = len(base) >= s.min_history_sessions
    quiet_before = trend_known and all(h.sound_rate_per_min < s.quiet_max_rate_per_min for h in base)
    if trend_known:
        baseline = sum(h.sound_rate_per_min for h in base) / len(base)
        figures["baseline_sound_rate_per_min"] = round(baseline, 2)
        over = f"over the last {_plural(len(base), 'session')}"
        if quiet_before and rate >= s.new_min_rate_per_min:
            reasons.append(GradeReason("clicks_new", WATCH, f"new clicking: {label} {_rate(rate)}, after "
                                       f"{_rate(baseline)} {over}"))
        elif rate >= s.worsening_ratio * baseline and rate - baseline >= s.worsening_min_increase_per_min:
            rising = [h.sound_rate_per_min for h in earlier[-(s.rising_sessions_seek - 1):]] + [rate]
            steps = zip(rising[:-1], rising[1:], strict=True)
            steadily = len(rising) >= s.rising_sessions_seek and all(b > a for a, b in steps)
            text = f"{label} {_rate(rate)}, up from {_rate(baseline)} {over}"
            if steadily:
                trail = " -> ".join(_rate(r) for r in rising)
                reasons.append(GradeReason("clicks_worsening", SEEK, f"{text}; rising in each of the last "
                                           f"{len(rising)} sessions ({trail})"))
            else:
                reasons.append(GradeReason("clicks_worsening", WATCH, text))
        elif current.sounds:
            steady = (baseline > 0 and baseline / s.steady_max_ratio <= rate <= baseline * s.steady_max_ratio
                      and not any(r.flag == "pain" for r in reasons))
            note = " (steady: consistent clicking without pain is usually mechanical)" if steady else ""
            reasons.append(GradeReason("info", BENIGN, f"{label} {_rate(rate)}, against {_rate(baseline)} "
                                       f"{over}{note}"))
    elif current.sounds:
        n_earlier = _plural(len(base), "earlier session")
        reasons.append(GradeReason("info", BENIGN, f"{label} {_rate(rate)}; no trend yet ({n_earlier} of this "
                                   f"joint, trends need {s.min_history_sessions})"))
    if quiet_before and rate >= s.new_min_rate_per_min:
        sounding = {j: o for j, o in (other_joints or {}).items()
                    if j != current.joint and o.athlete == current.athlete
                    and o.sound_rate_per_min >= s.spreading_min_rate_per_min}
        if sounding:
            others = ", ".join(f"{j} ({_rate(o.sound_rate_per_min)})" for j, o in sorted(sounding.items()))
            reasons.append(GradeReason("clicks_spreading", WATCH, f"clicking spreading to this joint: {others} "
                                       "already clicks"))

    # --- form: a coaching note, not a red flag ------------------------------------------------
    n_valgus = int(current.counts.get("valgus", 0))
    if n_valgus >= s.valgus_note_episodes and n_valgus > 0:
        reasons.append(GradeReason("valgus", BENIGN, f"{_plural(n_valgus, 'knee-valgus episode')} (knee collapsing "
                                   "inward): a form point for the coach, not a red flag"))

    grade = max((r.level for r in reasons), key=GRADES.index, default=BENIGN)
    # Most concerning first; the plain-words list reads top-down.
    reasons.sort(key=lambda r: -GRADES.index(r.level))
    return JointGrade(current.athlete, current.joint, current.session, t_ns, grade, tuple(reasons), figures, final)
