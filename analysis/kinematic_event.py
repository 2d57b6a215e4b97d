"""The record the kinematic detectors (valgus, instability, locking, reps) emit, before it becomes a JointEvent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jointmon.messages import JointEvent


@dataclass(frozen=True, slots=True)
class KinematicEvent:
    """One kinematic event: ``type`` one of "valgus", "instability", "locking", "rep"; ``t_ns`` the onset on the
    angle stream's clock (ns); ``magnitude`` in degrees (valgus: peak abduction; instability: extra flexion of the
    collapse; locking: degrees short of the usual extension or range; rep: peak of the driving angle);
    ``confidence`` in [0, 1]; ``details`` plain JSON values (durations in s, angles in deg)."""

    type: str
    t_ns: int
    magnitude: float
    confidence: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_joint_event(self, athlete: str, joint: str, session: str, stream_origin_ns: int,
                       sensor: str = "thigh+shank") -> JointEvent:
        """As a :class:`JointEvent`; ``stream_origin_ns`` is the angle clock's time of stream second 0."""
        return JointEvent(self.type, athlete, joint, session, int(self.t_ns), (self.t_ns - stream_origin_ns) / 1e9,
                          sensor, float(self.confidence), float(self.magnitude), dict(self.details))
