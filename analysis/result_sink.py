"""Where analysis results go: the sink interface, and fan-out to several sinks."""

from __future__ import annotations

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
    def angles(self, key: JointKey, t_ns: np.ndarray, flexion_deg: np.ndarray) -> None:
        """A block of knee flexion samples (degrees) at wall times ``t_ns`` (Unix ns)."""

    def event(self, event: JointEvent) -> None:
        """One detected event (click, rep, ...)."""

    def close(self) -> None:
        """Flush and release resources."""


class FanOut:
    """Sends every result to each of several sinks, in order."""

    def __init__(self, *sinks: ResultSink) -> None:
        self.sinks = list(sinks)

    def angles(self, key: JointKey, t_ns: np.ndarray, flexion_deg: np.ndarray) -> None:
        for s in self.sinks:
            s.angles(key, t_ns, flexion_deg)

    def event(self, event: JointEvent) -> None:
        for s in self.sinks:
            s.event(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
