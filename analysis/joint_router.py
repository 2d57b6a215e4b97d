"""Routes decoded data frames to one analysis pipeline per (athlete, joint).

Shared by the MQTT analysis service and the offline runner (``analysis.offline``), so a
recording or an imported session folder is analysed by exactly the code that runs live.
"""

from __future__ import annotations

import logging
from collections import Counter

from analysis.knee_pipeline import KneePipeline, KneeSettings
from analysis.result_sink import JointKey, ResultSink
from jointmon.errors import FrameError, TopicError
from jointmon.frames import Frame, decode_frame
from jointmon.ratelimit import RateLimitedLog
from jointmon.topics import DataTopic, parse_data_topic

log = logging.getLogger("jointmon.analysis")


class JointRouter:
    """Checks each frame against its stream's history, counts it, and hands it to its joint's pipeline.

    Malformed topics or payloads are counted per reason and logged, never raised.
    Counters (``self.counters``): ``frames``, ``frames_missing`` and ``dropped_<reason>`` for
    ``bad_topic``, ``frame_<FrameError reason>``, ``stream_mismatch`` and ``duplicate_frame``.
    ``self.samples`` counts samples per ``athlete/joint/sensor/stream``. Every pipeline writes to
    the one ``sink``.
    """

    def __init__(self, session: str, sink: ResultSink, knee_settings: KneeSettings | None = None) -> None:
        self.session = session
        self.sink = sink
        self.knee_settings = knee_settings or KneeSettings()
        self.pipelines: dict[tuple[str, str], KneePipeline] = {}
        self.counters: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()  # per "athlete/joint/sensor/stream"
        self._frame_seq: dict[str, int] = {}
        # Wall-time span of the accepted streams (Unix ns): stream starts (sample index 0) and last sample end.
        self.first_ns: int | None = None
        self.end_ns: int | None = None
        self._warn = RateLimitedLog(log)

    def drop(self, reason: str, where: object, detail: object) -> None:
        """Count a dropped message as ``dropped_<reason>`` and log it (rate-limited)."""
        self.counters[f"dropped_{reason}"] += 1
        self._warn.warning(reason, "dropped message on %s: %s", where, detail)

    def handle_message(self, topic: str, payload: bytes) -> bool:
        """Process one data message as it arrives from MQTT (topic string, encoded frame)."""
        try:
            t = parse_data_topic(topic)
        except TopicError as exc:
            self.drop("bad_topic", topic, exc)
            return False
        try:
            frame = decode_frame(payload)
        except FrameError as exc:
            self.drop(f"frame_{exc.reason}", topic, exc)
            return False
        return self.route(t, frame)

    def route(self, t: DataTopic, frame: Frame) -> bool:
        """Process one frame of the stream ``t``; return False when it was dropped (and counted)."""
        if (frame.stream.name == "IMU") != (t.stream == "imu"):
            self.drop("stream_mismatch", t, f"{frame.stream.name} frame on a {t.stream} topic")
            return False
        stream_key = f"{t.athlete}/{t.joint}/{t.sensor}/{t.stream}"
        last = self._frame_seq.get(stream_key)
        if last is not None and frame.frame_seq != last + 1:
            if frame.frame_seq <= last:
                self.drop("duplicate_frame", t, f"frame_seq {frame.frame_seq} after {last}")
                return False
            self.counters["frames_missing"] += frame.frame_seq - last - 1
            self._warn.warning("missing", "%s: %d frame(s) missing", stream_key, frame.frame_seq - last - 1)
        self._frame_seq[stream_key] = frame.frame_seq
        self.counters["frames"] += 1
        self.samples[stream_key] += frame.count
        start_ns = frame.t0_ns - round(frame.first_index * 1e9 / frame.rate_hz)
        end_ns = frame.t0_ns + round(frame.count * 1e9 / frame.rate_hz)
        self.first_ns = start_ns if self.first_ns is None else min(self.first_ns, start_ns)
        self.end_ns = end_ns if self.end_ns is None else max(self.end_ns, end_ns)
        pipeline = self.pipelines.get((t.athlete, t.joint))
        if pipeline is None:
            pipeline = KneePipeline(JointKey(t.athlete, t.joint, self.session), self.sink, self.knee_settings)
            self.pipelines[(t.athlete, t.joint)] = pipeline
            log.info("new joint %s/%s", t.athlete, t.joint)
        pipeline.on_frame(t.sensor, t.stream, frame)
        return True

    def finish(self) -> None:
        """End of session: every pipeline reports its pending detections."""
        for p in self.pipelines.values():
            p.finish()
