"""Everything the analysis does for one knee (thigh + shank sensors): clicks, flexion, reps."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from analysis.click_detector import ClickDetector, ClickDetectorSettings
from analysis.knee_angle import KneeFlexion
from analysis.rep_counter import Rep, RepCounter, RepSettings
from analysis.result_sink import JointKey, ResultSink
from jointmon.const import ANGLE_STORE_RATE_HZ
from jointmon.frames import Frame
from jointmon.messages import JointEvent

log = logging.getLogger("jointmon.analysis.knee")


@dataclass(frozen=True)
class KneeSettings:
    click: ClickDetectorSettings = field(default_factory=ClickDetectorSettings)
    rep: RepSettings = field(default_factory=RepSettings)
    # The same click reaches both sensors' microphones; detections closer than this are one event.
    click_merge_window_s: float = 0.02
    angle_store_rate_hz: float = ANGLE_STORE_RATE_HZ


@dataclass
class _MicState:
    detector: ClickDetector
    rate_hz: float
    index_offset: int = 0  # stream sample index = detector sample index + offset (grows at gaps)
    t0_ns: int = 0  # wall time of stream sample index 0


class KneePipeline:
    """Frames in (any order across streams), results out to a :class:`ResultSink`.

    ``summary`` holds running figures for progress displays: clicks, reps, last flexion.
    """

    def __init__(self, key: JointKey, sink: ResultSink, settings: KneeSettings | None = None) -> None:
        self.key = key
        self.sink = sink
        self.settings = settings or KneeSettings()
        self._mics: dict[str, _MicState] = {}
        self._knee: KneeFlexion | None = None
        self._reps = RepCounter(self.settings.rep)
        self._recent_clicks: list[int] = []
        self._angle_bucket = -1
        self.counters: Counter[str] = Counter()
        self.reps: list[Rep] = []
        self.last_flexion_deg = float("nan")

    def on_frame(self, sensor: str, stream: str, frame: Frame) -> None:
        if stream == "mic":
            self._on_mic(sensor, frame)
        elif stream == "imu":
            self._on_imu(sensor, frame)

    def _on_mic(self, sensor: str, frame: Frame) -> None:
        st = self._mics.get(sensor)
        if st is None:
            settings = ClickDetectorSettings(**{**self.settings.click.__dict__, "rate_hz": frame.rate_hz})
            st = self._mics[sensor] = _MicState(ClickDetector(settings), frame.rate_hz)
        expected = st.detector.samples_seen + st.index_offset
        if frame.first_index != expected:
            # Samples are missing (a lost packet): keep stream indices true instead of closing the gap.
            st.index_offset = frame.first_index - st.detector.samples_seen
        st.t0_ns = frame.t0_ns - round(frame.first_index * 1e9 / frame.rate_hz)
        for det in st.detector.process(frame.physical()[:, 0]):
            self._on_click(sensor, st, det.index + st.index_offset, det.magnitude_db)

    def _on_click(self, sensor: str, st: _MicState, index: int, magnitude_db: float) -> None:
        t_ns = st.t0_ns + round(index * 1e9 / st.rate_hz)
        window_ns = self.settings.click_merge_window_s * 1e9
        self._recent_clicks = [t for t in self._recent_clicks if abs(t_ns - t) < 10 * window_ns]
        if any(abs(t_ns - t) < window_ns for t in self._recent_clicks):
            self.counters["clicks_corroborated"] += 1
            return
        self._recent_clicks.append(t_ns)
        self.counters["clicks"] += 1
        excess = magnitude_db - self.settings.click.threshold_db
        confidence = float(np.clip(1.0 - np.exp(-max(excess, 0.0) / 6.0), 0.05, 0.99))
        self.sink.event(JointEvent("click", self.key.athlete, self.key.joint, self.key.session, int(t_ns),
                                   index / st.rate_hz, sensor, confidence, float(magnitude_db),
                                   {"flexion_deg": round(self.last_flexion_deg, 1)}))

    def _on_imu(self, sensor: str, frame: Frame) -> None:
        if sensor not in ("thigh", "shank"):
            self.counters["imu_unknown_segment"] += 1
            return
        if self._knee is None:
            self._knee = KneeFlexion(frame.rate_hz)
        data = frame.physical()
        t_ns, flex = self._knee.update(sensor, frame.sample_times_ns(), data[:, :3], data[:, 3:])
        if not t_ns.size:
            return
        self.last_flexion_deg = float(flex[-1])
        # Store at angle_store_rate_hz: the first sample of each new time bucket.
        bucket = t_ns // round(1e9 / self.settings.angle_store_rate_hz)
        keep = bucket != np.concatenate(([self._angle_bucket], bucket[:-1]))
        self._angle_bucket = int(bucket[-1])
        if keep.any():
            self.sink.angles(self.key, t_ns[keep], flex[keep])
        for rep in self._reps.update(t_ns, flex):
            self.reps.append(rep)
            self.sink.event(JointEvent("rep", self.key.athlete, self.key.joint, self.key.session, rep.t_start_ns,
                                       0.0, "thigh+shank", 1.0, rep.peak_flexion_deg,
                                       {"rep": rep.index, "duration_s": (rep.t_end_ns - rep.t_start_ns) / 1e9,
                                        "t_peak_ns": rep.t_peak_ns, "min_flexion_deg": rep.min_flexion_deg}))

    def finish(self) -> None:
        """End of session: the click detectors' pending windows are complete by now or never."""
        for sensor, st in self._mics.items():
            for det in st.detector.flush():
                self._on_click(sensor, st, det.index + st.index_offset, det.magnitude_db)
