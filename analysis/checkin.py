"""The athlete check-in of the live web view: pain and swelling per joint, before and after the session.

A check-in is validated here (clear messages for the page) and turned into the same
:class:`jointmon.messages.SelfReport` that ``jointmon checkin`` publishes, so the red-flag grading
treats both alike. The grading takes one report per (athlete, joint, session); a check-in before and
one after the session are combined into the worst of the two (the highest pain, swelling if either
said so): pain at any point of a session with joint sounds is the red flag, and an "after" with less
pain must not hide a "before" with more. The page shows both as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jointmon.errors import JointmonError, TopicError
from jointmon.messages import PAIN_MAX, PAIN_MIN, SelfReport
from jointmon.topics import check_level

PHASES = ("before", "after")
# Joint kinds the analysis has angle models for (analysis.knee_pipeline.JOINT_SENSORS); a joint id is
# the kind, optionally with a side: "left_knee", "right_shoulder", "knee".
JOINT_KINDS = ("knee", "shoulder")
SIDES = ("left", "right")
STANDARD_JOINTS = tuple(f"{side}_{kind}" for kind in JOINT_KINDS for side in SIDES)


class CheckInError(JointmonError):
    """A check-in the page sent that cannot be accepted; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class CheckIn:
    """One check-in as given: ``pain`` 0..10 (numeric rating scale) or None, ``swelling`` yes/no or None,
    ``phase`` "before" or "after" the session, ``t_ns`` wall clock (Unix ns) of its arrival."""

    athlete: str
    joint: str
    phase: str
    pain: int | None
    swelling: bool | None
    t_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {"athlete": self.athlete, "joint": self.joint, "phase": self.phase, "pain": self.pain,
                "swelling": self.swelling, "t_ns": self.t_ns}


def known_joint(joint: str) -> bool:
    """True for a joint id the analysis can model: knee or shoulder, with an optional left_/right_ side."""
    side, _, kind = joint.rpartition("_")
    return kind in JOINT_KINDS and side in ("", *SIDES)


def parse_checkin(raw: Any, t_ns: int) -> CheckIn:
    """A check-in from the page's JSON object; :class:`CheckInError` names the first bad field."""
    if not isinstance(raw, dict):
        raise CheckInError("the check-in must be a JSON object")
    unknown = sorted(set(raw) - {"athlete", "joint", "phase", "pain", "swelling"})
    if unknown:
        raise CheckInError(f"unknown field(s) {', '.join(unknown)}: a check-in has athlete, joint, phase, pain, "
                           "swelling")
    athlete, joint = raw.get("athlete"), raw.get("joint")
    try:
        check_level("athlete", athlete)  # a pseudonym such as ath-001 (never a name)
        check_level("joint", joint)
    except TopicError as exc:
        raise CheckInError(str(exc)) from None
    if not known_joint(joint):
        raise CheckInError(f"joint {joint!r} is not a known joint: one of {', '.join(STANDARD_JOINTS)}")
    phase = raw.get("phase")
    if phase not in PHASES:
        raise CheckInError(f"phase {phase!r}: 'before' or 'after' the session")
    pain = _pain(raw.get("pain"))
    swelling = raw.get("swelling")
    if swelling is not None and not isinstance(swelling, bool):
        raise CheckInError(f"swelling {swelling!r}: true, false or null (not asked)")
    if pain is None and swelling is None:
        raise CheckInError("nothing to report: give pain (0-10) and/or swelling (true/false)")
    return CheckIn(athlete, joint, phase, pain, swelling, t_ns)


def _pain(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value != int(value):
        raise CheckInError(f"pain {value!r}: a whole number from {PAIN_MIN} (none) to {PAIN_MAX} (worst)")
    if not PAIN_MIN <= int(value) <= PAIN_MAX:
        raise CheckInError(f"pain {int(value)}: a whole number from {PAIN_MIN} (none) to {PAIN_MAX} (worst)")
    return int(value)


def combined_report(checkins: dict[str, CheckIn], session: str) -> SelfReport:
    """The session's self-report from the check-ins of one (athlete, joint) by phase: the highest pain
    given, swelling True if any check-in said so (False if all that answered said no), ``t_ns`` of the
    latest. ``checkins`` must not be empty."""
    items = sorted(checkins.values(), key=lambda c: c.t_ns)
    pains = [c.pain for c in items if c.pain is not None]
    swellings = [c.swelling for c in items if c.swelling is not None]
    last = items[-1]
    return SelfReport(last.athlete, last.joint, session, last.t_ns, pain=max(pains) if pains else None,
                      swelling=any(swellings) if swellings else None, source="athlete")
