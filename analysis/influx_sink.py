"""Analysis results as InfluxDB points (schema below), through :class:`InfluxWriter`.

Schema (tags are low-cardinality: no per-event ids)::

    joint_angle,athlete=A,joint=J,session=S  flexion_deg=F,abduction_deg=B,rotation_deg=R   50 Hz
                (knee; shoulder: elevation_deg, plane_deg, rotation_deg; unknown values left out)
    joint_event,athlete=A,joint=J,session=S,type=T  sensor="...",confidence=C,
                magnitude=M,stream_t_s=X,details="{json}"                         one per event
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from analysis.influx_writer import InfluxWriter, line, lines_from_arrays
from analysis.result_sink import JointKey
from jointmon.config import InfluxSettings
from jointmon.messages import JointEvent

ANGLE_MEASUREMENT = "joint_angle"
EVENT_MEASUREMENT = "joint_event"


def _tags(athlete: str, joint: str, session: str) -> dict[str, str]:
    return {"athlete": athlete, "joint": joint, "session": session}


class InfluxSink:
    """A :class:`~analysis.result_sink.ResultSink` writing to InfluxDB 1.x or 2.x."""

    def __init__(self, settings: InfluxSettings, writer: InfluxWriter | None = None) -> None:
        self.writer = writer or InfluxWriter(settings)

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        if not angles:
            return
        self.writer.write(lines_from_arrays(ANGLE_MEASUREMENT, _tags(key.athlete, key.joint, key.session),
                                            {k: np.asarray(v, float) for k, v in angles.items()},
                                            np.asarray(t_ns, np.int64)))

    def event(self, e: JointEvent) -> None:
        tags = {**_tags(e.athlete, e.joint, e.session), "type": e.type}
        fields = {"sensor": e.sensor, "confidence": e.confidence, "magnitude": e.magnitude,
                  "stream_t_s": e.stream_t_s, "details": json.dumps(e.details, separators=(",", ":"))}
        self.writer.write([line(EVENT_MEASUREMENT, tags, fields, e.t_ns)])

    def close(self) -> None:
        self.writer.close()
