"""Where analysis results go: the sink interface, and fan-out to several sinks.

Every sink takes angles and events (:class:`ResultSink`). A sink may also take the service's other
records (:class:`RecordSink`: grades, self-reports, sensor statuses, gap records, pipeline counters);
the analysis service hands them over with :func:`forward`, which skips sinks without that method, so
a sink that only cares about angles and events (the SQLite results file, the offline collector)
needs nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from jointmon.frames import Gap
from jointmon.messages import JointEvent, JointGrade, SelfReport, Status
from jointmon.topics import DataTopic

log = logging.getLogger("jointmon.analysis.sink")

# The optional RecordSink methods, in the order FanOut defines them.
RECORD_METHODS = ("grade", "self_report", "sensor_status", "gap", "pipeline_health")


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


class RecordSink(ResultSink, Protocol):
    """A sink that also keeps the analysis service's other records (every method optional, see :func:`forward`)."""

    def grade(self, grade: JointGrade) -> None:
        """A red-flag grade (interim or final) of one joint in the session."""

    def self_report(self, report: SelfReport) -> None:
        """An accepted self-report (pain, swelling)."""

    def sensor_status(self, status: Status, session: str) -> None:
        """A gateway's sensor status (``component == "sensor"``, id ``athlete.joint.segment``), received
        while the service analyses ``session``."""

    def gap(self, topic: DataTopic, gap: Gap, session: str) -> None:
        """A gateway gap record of the stream ``topic`` (samples that never arrived) in ``session``."""

    def pipeline_health(self, component: str, counters: Mapping[str, int], t_ns: int) -> None:
        """Cumulative counters of a pipeline component (``analysis``) at wall time ``t_ns`` (Unix ns)."""


def forward(sink: object, method: str, *args: Any) -> None:
    """Call ``sink.<method>(*args)`` if the sink has that method (a :class:`RecordSink` extra), else nothing."""
    fn = getattr(sink, method, None)
    if fn is not None:
        fn(*args)


class FanOut:
    """Sends every result to each of several sinks, in order. One sink raising does not keep the
    others from getting the result (it is logged and re-raised after the others had it)."""

    def __init__(self, *sinks: ResultSink) -> None:
        self.sinks = list(sinks)

    def _each(self, method: str, *args: Any) -> None:
        error: Exception | None = None
        for s in self.sinks:
            try:
                forward(s, method, *args)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after every sink had its turn
                log.exception("%s.%s failed", type(s).__name__, method)
                error = error or exc
        if error is not None:
            raise error

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        self._each("angles", key, t_ns, angles)

    def event(self, event: JointEvent) -> None:
        self._each("event", event)

    def grade(self, grade: JointGrade) -> None:
        self._each("grade", grade)

    def self_report(self, report: SelfReport) -> None:
        self._each("self_report", report)

    def sensor_status(self, status: Status, session: str) -> None:
        self._each("sensor_status", status, session)

    def gap(self, topic: DataTopic, gap: Gap, session: str) -> None:
        self._each("gap", topic, gap, session)

    def pipeline_health(self, component: str, counters: Mapping[str, int], t_ns: int) -> None:
        self._each("pipeline_health", component, counters, t_ns)

    def close(self) -> None:
        self._each("close")
