"""JSON message schemas on the events and status topics (see docs/protocol.md).

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
