"""JSON message schemas on the events, status, reports and grades topics (see docs/protocol.md).

Events are small and rare, so JSON keeps them readable for any subscriber (Node-RED, a coach's
script); bulk sensor data travels as binary frames (``jointmon.frames``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from jointmon.errors import MessageError

EVENT_TYPES = ("click", "snap", "crepitus", "valgus", "instability", "locking", "rep")


@dataclass(frozen=True, slots=True)
class JointEvent:
    """One detected event on one joint.

    ``t_ns`` is the wall clock (Unix ns) of the event's onset; ``stream_t_s`` the same instant in
    seconds since the sensor stream started (sensor clock), which is what simulator labels use.
    ``confidence`` is in [0, 1]. ``magnitude`` is event specific (click: dB above the noise
    floor; rep: peak flexion in degrees; valgus: degrees).
    """

    type: str
    athlete: str
    joint: str
    session: str
    t_ns: int
    stream_t_s: float
    sensor: str
    confidence: float
    magnitude: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise MessageError(f"event type {self.type!r} is not one of {EVENT_TYPES}")
        if not (0.0 <= self.confidence <= 1.0):
            raise MessageError(f"confidence {self.confidence} outside [0, 1]")
        if not (math.isfinite(self.stream_t_s) and math.isfinite(self.magnitude)):
            raise MessageError("stream_t_s and magnitude must be finite numbers")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> JointEvent:
        try:
            raw = json.loads(payload)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            return cls(
                type=str(raw["type"]), athlete=str(raw["athlete"]), joint=str(raw["joint"]),
                session=str(raw["session"]), t_ns=int(raw["t_ns"]), stream_t_s=float(raw["stream_t_s"]),
                sensor=str(raw["sensor"]), confidence=float(raw["confidence"]),
                magnitude=float(raw["magnitude"]), details=dict(raw.get("details", {})),
            )
        except MessageError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            raise MessageError(f"malformed event: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Status:
    """Retained status of a component (gateway, sensor, analysis). ``state`` is e.g. ``online``."""

    component: str
    component_id: str
    state: str
    t_ns: int
    counters: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Status:
        try:
            raw = json.loads(payload)
            return cls(str(raw["component"]), str(raw["component_id"]), str(raw["state"]), int(raw["t_ns"]),
                       dict(raw.get("counters", {})), dict(raw.get("info", {})))
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            raise MessageError(f"malformed status: {exc!r}") from exc


# ------------------------------------------------------------------------------------------------
# Self-report (reports topic) and red-flag grade (grades topic); see docs/protocol.md §7.
# ------------------------------------------------------------------------------------------------

PAIN_MIN, PAIN_MAX = 0, 10  # numeric rating scale, 0 = no pain, 10 = worst imaginable
REPORT_SOURCES = ("athlete", "coach", "therapist")
GRADES = ("benign", "watch", "seek evaluation")  # in increasing order of concern
NOT_A_DIAGNOSIS = ("jointmon measures and grades against red flags; this is not a diagnosis. "
                   "Talk to a physical therapist or physician about any concern.")


def _opt_bool(raw: dict[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"{key} must be true, false or null, not {value!r}")


def _opt_pain(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"pain must be a whole number {PAIN_MIN}..{PAIN_MAX} or null, not {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class SelfReport:
    """What the athlete (or coach) reports for one session of one joint: the red flags no sensor sees.

    ``pain`` is 0..10 on the numeric rating scale (None: not asked); ``swelling`` is visible
    puffiness or warmth (None: not asked); ``injury`` is True when the clicking started after an
    injury. ``t_ns`` is the wall clock (Unix ns) of the report. A later report for the same
    (athlete, joint, session) replaces an earlier one.
    """

    athlete: str
    joint: str
    session: str
    t_ns: int
    pain: int | None = None
    swelling: bool | None = None
    injury: bool | None = None
    source: str = "athlete"

    def __post_init__(self) -> None:
        if self.pain is not None and not (PAIN_MIN <= self.pain <= PAIN_MAX):
            raise MessageError(f"pain {self.pain} outside {PAIN_MIN}..{PAIN_MAX}")
        if self.source not in REPORT_SOURCES:
            raise MessageError(f"source {self.source!r} is not one of {REPORT_SOURCES}")
        for name in ("athlete", "joint", "session"):
            if not getattr(self, name):
                raise MessageError(f"{name} must not be empty")
        if self.pain is None and self.swelling is None and self.injury is None:
            raise MessageError("a self-report needs at least one of pain, swelling, injury")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> SelfReport:
        try:
            raw = json.loads(payload)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            return cls(athlete=str(raw["athlete"]), joint=str(raw["joint"]), session=str(raw["session"]),
                       t_ns=int(raw["t_ns"]), pain=_opt_pain(raw.get("pain")), swelling=_opt_bool(raw, "swelling"),
                       injury=_opt_bool(raw, "injury"), source=str(raw.get("source", "athlete")))
        except MessageError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            raise MessageError(f"malformed self-report: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class GradeReason:
    """One reason behind a grade: ``flag`` (``pain``, ``swelling``, ``injury``, ``instability``,
    ``locking``, ``clicks_new``, ``clicks_worsening``, ``clicks_spreading``, ``valgus``, ``info``),
    the ``level`` it alone would give (one of :data:`GRADES`), and ``text`` in plain words."""

    flag: str
    level: str
    text: str

    def __post_init__(self) -> None:
        if self.level not in GRADES:
            raise MessageError(f"level {self.level!r} is not one of {GRADES}")


@dataclass(frozen=True, slots=True)
class JointGrade:
    """The red-flag grade of one joint in one session: ``grade`` is the highest level among the
    ``reasons`` (benign when there are none); ``figures`` holds the numbers behind them (click rate
    per minute, event counts, reported pain); ``t_ns`` is the wall clock (Unix ns) of the grading."""

    athlete: str
    joint: str
    session: str
    t_ns: int
    grade: str
    reasons: tuple[GradeReason, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)
    final: bool = True  # False for an interim grade published while the session runs
    disclaimer: str = NOT_A_DIAGNOSIS

    def __post_init__(self) -> None:
        if self.grade not in GRADES:
            raise MessageError(f"grade {self.grade!r} is not one of {GRADES}")

    def text(self) -> str:
        """Plain-words report: grade, one reason per line, and the not-a-diagnosis note."""
        lines = [f"{self.athlete} {self.joint} session {self.session}: {self.grade.upper()}"]
        lines += [f"  - {r.text}" for r in self.reasons] or ["  - no red flag measured or reported"]
        lines.append(f"  ({self.disclaimer})")
        return "\n".join(lines)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> JointGrade:
        try:
            raw = json.loads(payload)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            reasons = tuple(GradeReason(str(r["flag"]), str(r["level"]), str(r["text"])) for r in raw["reasons"])
            return cls(athlete=str(raw["athlete"]), joint=str(raw["joint"]), session=str(raw["session"]),
                       t_ns=int(raw["t_ns"]), grade=str(raw["grade"]), reasons=reasons,
                       figures=dict(raw.get("figures", {})), final=bool(raw.get("final", True)),
                       disclaimer=str(raw.get("disclaimer", NOT_A_DIAGNOSIS)))
        except MessageError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            raise MessageError(f"malformed grade: {exc!r}") from exc
