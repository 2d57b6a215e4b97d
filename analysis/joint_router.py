"""Routes decoded data frames to one analysis pipeline per (athlete, joint).

Shared by the MQTT analysis service and the offline runner (``analysis.offline``), so a
recording or an imported session folder is analysed by exactly the code that runs live.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from analysis.knee_pipeline import KneePipeline, KneeSettings
from analysis.result_sink import JointKey, ResultSink
from jointmon.errors import FrameError, TopicError
from jointmon.frames import Frame, decode_frame
from jointmon.packets import StreamType
from jointmon.ratelimit import RateLimitedLog
from jointmon.topics import DataTopic, parse_data_topic, partition_of

log = logging.getLogger("jointmon.analysis")


@dataclass(slots=True)
class _Stream:
    key: str  # "athlete/joint/sensor/stream", as in the counters
    imu: bool  # an IMU topic (else a microphone one)
    pipeline: KneePipeline | None = None  # its joint's, from its first accepted frame on
    frame_seq: int | None = None  # of the last accepted frame


class JointRouter:
    """Checks each frame against its stream's history, counts it, and hands it to its joint's pipeline.

    Malformed topics or payloads are counted per reason and logged, never raised.
    Counters (``self.counters``): ``frames``, ``frames_missing`` and ``dropped_<reason>`` for
    ``bad_topic``, ``frame_<FrameError reason>``, ``stream_mismatch`` and ``duplicate_frame``.
    ``self.samples`` counts samples per ``athlete/joint/sensor/stream``. Every pipeline writes to
    the one ``sink``.

    Partitioned (several workers share the streams, :mod:`analysis.partitions`): after
    :meth:`set_ownership`, frames of joints in partitions this worker does not own are dropped
    (``dropped_not_owned``: a handover's leftovers, analysed by the new owner), a topic whose partition level is
    not the joint's (gateway and analysis configured with different partition counts) as
    ``dropped_partition_mismatch``, and the pipelines of released partitions are finished and removed.
    """

    def __init__(self, session: str, sink: ResultSink, knee_settings: KneeSettings | None = None) -> None:
        self.session = session
        self.sink = sink
        self.knee_settings = knee_settings or KneeSettings()
        self.pipelines: dict[tuple[str, str], KneePipeline] = {}
        self.counters: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()  # per "athlete/joint/sensor/stream"
        self._streams: dict[DataTopic, _Stream] = {}  # per stream: what route() needs, looked up once per frame
        # Wall-time span of the accepted streams (Unix ns): stream starts (sample index 0) and last sample end.
        self.first_ns: int | None = None
        self.end_ns: int | None = None
        self._warn = RateLimitedLog(log)
        # (partition count, owned partitions) or None (not partitioned: every joint is ours). Replaced whole by
        # set_ownership() from any thread; route() and finish() compare it with what they last applied.
        self._ownership: tuple[int, frozenset[int]] | None = None
        self._applied: tuple[int, frozenset[int]] | None = None

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

    def set_ownership(self, partitions: int, owned: frozenset[int] | set[int]) -> None:
        """From now on analyse only joints whose partition (of ``partitions``) is in ``owned`` (any thread; applied
        by the processing thread at its next frame or at :meth:`finish`)."""
        self._ownership = (partitions, frozenset(owned))

    def owns(self, athlete: str, joint: str) -> bool:
        """Whether this worker analyses the joint (always, when not partitioned)."""
        own = self._ownership
        return own is None or partition_of(athlete, joint, own[0]) in own[1]

    def _apply_ownership(self) -> None:
        """Finish and forget the pipelines (and stream states) of joints no longer owned."""
        own = self._applied = self._ownership
        if own is None:
            return
        for key in [k for k in self.pipelines if partition_of(*k, own[0]) not in own[1]]:
            log.info("joint %s/%s released (partition %d)", *key, partition_of(*key, own[0]))
            self.pipelines.pop(key).finish()
            self.counters["joints_released"] += 1
        for t in [t for t in self._streams if (t.athlete, t.joint) not in self.pipelines]:
            del self._streams[t]

    def route(self, t: DataTopic, frame: Frame) -> bool:
        """Process one frame of the stream ``t``; return False when it was dropped (and counted)."""
        if self._ownership is not self._applied:
            self._apply_ownership()
        st = self._streams.get(t)
        if st is None:
            st = self._new_stream(t)
            if st is None:
                return False
            self._streams[t] = st
        if (frame.stream is StreamType.IMU) != st.imu:
            self.drop("stream_mismatch", t, f"{frame.stream.name} frame on a {t.stream} topic")
            return False
        last = st.frame_seq
        if last is not None and frame.frame_seq != last + 1:
            if frame.frame_seq <= last:
                self.drop("duplicate_frame", t, f"frame_seq {frame.frame_seq} after {last}")
                return False
            self.counters["frames_missing"] += frame.frame_seq - last - 1
            self._warn.warning("missing", "%s: %d frame(s) missing", st.key, frame.frame_seq - last - 1)
        st.frame_seq = frame.frame_seq
        self.counters["frames"] += 1
        count = frame.count
        self.samples[st.key] += count
        start_ns = frame.t0_ns - round(frame.first_index * 1e9 / frame.rate_hz)
        end_ns = frame.t0_ns + round(count * 1e9 / frame.rate_hz)
        if self.first_ns is None or start_ns < self.first_ns:
            self.first_ns = start_ns
        if self.end_ns is None or end_ns > self.end_ns:
            self.end_ns = end_ns
        if st.pipeline is None:  # the stream's first accepted frame
            st.pipeline = self._pipeline(t)
        st.pipeline.on_frame(t.sensor, t.stream, frame)
        return True

    def _new_stream(self, t: DataTopic) -> _Stream | None:
        """The state of a stream seen for the first time; None (dropped, counted) if it is not this worker's."""
        own = self._ownership
        if own is not None:
            partition = partition_of(t.athlete, t.joint, own[0])
            if t.partition is not None and t.partition != partition:
                self.drop("partition_mismatch", t, f"joint's partition is {partition} of {own[0]}: do the gateway "
                          "and the analysis use the same partition count?")
                return None
            if partition not in own[1]:
                self.drop("not_owned", t, f"partition {partition} is another worker's")
                return None
        return _Stream(f"{t.athlete}/{t.joint}/{t.sensor}/{t.stream}", t.stream == "imu")

    def _pipeline(self, t: DataTopic) -> KneePipeline:
        """The pipeline of the joint of ``t``, created if new."""
        pipeline = self.pipelines.get((t.athlete, t.joint))
        if pipeline is None:
            pipeline = KneePipeline(JointKey(t.athlete, t.joint, self.session), self.sink, self.knee_settings)
            self.pipelines[(t.athlete, t.joint)] = pipeline
            log.info("new joint %s/%s", t.athlete, t.joint)
        return pipeline

    def finish(self) -> None:
        """End of session: every pipeline reports its pending detections."""
        if self._ownership is not self._applied:
            self._apply_ownership()
        for p in self.pipelines.values():
            p.finish()
