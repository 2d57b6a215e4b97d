"""Where analysis results go: the sink interface, and fan-out to several sinks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from jointmon.messages import JointEvent


@dataclass(frozen=True, slots=True)
class JointKey:
    athlete: str
    joint: str
    session: str


class ResultSink(Protocol):
    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        """A block of joint-angle samples at wall times ``t_ns`` (Unix ns): named series of degrees, each
        shaped like ``t_ns`` (knee: ``flexion_deg``, ``abduction_deg``, ``rotation_deg``; shoulder:
        ``elevation_deg``, ``plane_deg``, ``rotation_deg``). NaN = not known at that sample (e.g. abduction
        before the sensor-to-segment calibration completed)."""

    def event(self, event: JointEvent) -> None:
        """One detected event (click, rep, ...)."""

    def close(self) -> None:
        """Flush and release resources."""


class FanOut:
    """Sends every result to each of several sinks, in order."""

    def __init__(self, *sinks: ResultSink) -> None:
        self.sinks = list(sinks)

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        for s in self.sinks:
            s.angles(key, t_ns, angles)

    def event(self, event: JointEvent) -> None:
        for s in self.sinks:
            s.event(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
