"""Everything the analysis does for one knee (thigh + shank sensors): clicks, flexion, reps."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.angle_history import AngleHistory
from analysis.kinematic_event import KinematicEvent
from analysis.kinematic_event_detectors import KinematicEvents, KinematicSettings
from analysis.knee_angles import KNEE_ANGLES, KneeAngles
from analysis.rep_counter import Rep
from analysis.result_sink import JointKey, ResultSink
from analysis.shoulder_angles import SHOULDER_ANGLES, ShoulderAngles
from analysis.sound_events import SoundEvent, SoundSettings, SoundTracker
from analysis.transient_detector import TransientDetector, TransientSettings
from jointmon.const import ANGLE_STORE_RATE_HZ
from jointmon.frames import Frame
from jointmon.messages import JointEvent

log = logging.getLogger("jointmon.analysis.knee")


@dataclass(frozen=True)
class KneeSettings:
    sound: SoundSettings = field(default_factory=SoundSettings)
    kinematics: KinematicSettings = field(default_factory=KinematicSettings)  # valgus, instability, reps, locking
    angle_store_rate_hz: float = ANGLE_STORE_RATE_HZ


@dataclass
class _MicState:
    detector: TransientDetector
    rate_hz: float
    index_offset: int = 0  # stream sample index = detector sample index + offset (grows at gaps)
    t0_ns: int = 0  # wall time of stream sample index 0


# Sensors of each joint kind (topic sensor names); IMU frames of other sensors are counted and skipped.
JOINT_SENSORS = {"knee": ("thigh", "shank"), "shoulder": ("upper_arm", "trunk")}
ANGLE_HISTORY_S = 10.0  # seconds of angles kept per pipeline for detectors that look back
IMU_RATE_HZ_MAX = 200  # the IMU rate the history is sized for (a faster IMU keeps proportionally less time)


@dataclass(frozen=True)
class ImuChunk:
    """One sensor's IMU frame as given to the kinematic hook: ``t_ns`` (n,) Unix ns, ``accel_g`` (n, 3) g and
    ``gyro_dps`` (n, 3) deg/s in the sensor frame."""

    sensor: str
    t_ns: np.ndarray
    accel_g: np.ndarray
    gyro_dps: np.ndarray


class KneePipeline:
    """Frames in (any order across streams), results out to a :class:`ResultSink`.

    ``summary`` holds running figures for progress displays: clicks, reps, last flexion.
    """

    def __init__(self, key: JointKey, sink: ResultSink, settings: KneeSettings | None = None) -> None:
        self.key = key
        self.sink = sink
        self.settings = settings or KneeSettings()
        self._mics: dict[str, _MicState] = {}
        self._angles: KneeAngles | ShoulderAngles | None = None
        # Joint angles for other detectors: the newest values and a ring buffer of the last seconds.
        kind = key.joint.rsplit("_", 1)[-1]
        self.angle_history = AngleHistory(SHOULDER_ANGLES if kind == "shoulder" else KNEE_ANGLES,
                                          int(ANGLE_HISTORY_S * IMU_RATE_HZ_MAX))
        self.last_angles: dict[str, float] = self.angle_history.latest()
        self.angles_calibrated = False  # sensor-to-segment calibration done (before: provisional angles)
        side = key.joint.split("_", 1)[0] if key.joint.split("_", 1)[0] in ("left", "right") else ""
        self._kin = KinematicEvents("shoulder" if kind == "shoulder" else "knee", side, self.settings.kinematics)
        self._stream_origin_ns: int | None = None  # angle clock (thigh / upper arm) time of stream second 0
        self._sounds = SoundTracker(self.settings.sound)
        self.sound_events: list[SoundEvent] = []
        self._angle_bucket = -1
        self.counters: Counter[str] = Counter()
        self.reps: list[Rep] = []  # completed reps (from the kinematic events' rep segmentation)
        self.last_flexion_deg = float("nan")

    def on_frame(self, sensor: str, stream: str, frame: Frame) -> None:
        if stream == "mic":
            self._on_mic(sensor, frame)
        elif stream == "imu":
            self._on_imu(sensor, frame)

    def _new_mic(self, sensor: str, frame: Frame) -> _MicState:
        t = TransientSettings(**{**self.settings.sound.transient.__dict__, "rate_hz": frame.rate_hz})
        st = self._mics[sensor] = _MicState(TransientDetector(t), frame.rate_hz, frame.first_index)
        return st

    def _on_mic(self, sensor: str, frame: Frame) -> None:
        st = self._mics.get(sensor)
        if st is not None and (frame.rate_hz != st.rate_hz
                               or frame.first_index != st.detector.samples_seen + st.index_offset):
            # A gap (lost packets, reboot) or a rate change: the spectra must not straddle it. Close this
            # stretch and start a fresh detector at the new index (stream indices stay true).
            self.counters["mic_gaps" if frame.rate_hz == st.rate_hz else "mic_rate_changes"] += 1
            self._emit_transients(sensor, st, st.detector.flush())
            st = None
        if st is None:
            st = self._new_mic(sensor, frame)
        st.t0_ns = frame.t0_ns - round(frame.first_index * 1e9 / frame.rate_hz)
        x = frame.physical()[:, 0]
        bad = ~np.isfinite(x)
        if bad.any():
            self.counters["mic_bad_samples"] += int(bad.sum())
            x = np.where(bad, 0.0, x)
        self._sounds.on_mic(sensor, frame.t0_ns, frame.rate_hz, x)  # raw samples: do both microphones agree?
        self._emit_transients(sensor, st, st.detector.process(x))
        now_ns = st.t0_ns + round((st.detector.samples_seen + st.index_offset) * 1e9 / st.rate_hz)
        # Decide what every microphone has heard up to now (the slower one bounds it).
        now_ns = min([now_ns] + [m.t0_ns + round((m.detector.samples_seen + m.index_offset) * 1e9 / m.rate_hz)
                                 for m in self._mics.values()])
        for ev in self._sounds.poll(now_ns):
            self._on_click(ev)

    def _emit_transients(self, sensor: str, st: _MicState, found: list) -> None:
        for tr in found:
            index = tr.index + st.index_offset
            self._sounds.add(sensor, st.t0_ns + round(index * 1e9 / st.rate_hz), index / st.rate_hz, tr)

    def _rep_at(self, t_ns: int) -> int:
        """Index of the rep ``t_ns`` falls in: a finished rep, else the one in progress (next index)."""
        for rep in reversed(self.reps):
            if rep.t_start_ns <= t_ns <= rep.t_end_ns:
                return rep.index
            if rep.t_end_ns < t_ns:
                return rep.index + 1
        return self.reps[0].index - 1 if self.reps else 0

    def _on_click(self, ev: SoundEvent) -> None:
        """One decided joint sound (click, snap or crepitus train) -> a JointEvent with angle, rep and rates."""
        rep = self._rep_at(ev.t_ns)
        self.sound_events.append(ev)
        self.counters[{"click": "clicks", "snap": "snaps", "crepitus": "crepitus_trains"}[ev.type]] += 1
        rates = self.sound_rates()
        details = {**ev.details, "rep": rep, "clicks_in_rep": rates["per_rep"].get(rep, {}).get("click", 0),
                   "session_clicks_per_min": rates["clicks_per_min"]}
        self.sink.event(JointEvent(ev.type, self.key.athlete, self.key.joint, self.key.session, int(ev.t_ns),
                                   ev.stream_t_s, ev.sensor, ev.confidence, ev.magnitude_db, details))

    def sound_rates(self) -> dict:
        """Joint sounds so far: per rep ``{rep: {"click": n, "snap": n, "crepitus": n}}`` and the session's
        clicks per minute of microphone stream (``clicks_per_min``; ``minutes`` heard)."""
        per_rep: dict[int, Counter[str]] = {}
        for ev in self.sound_events:
            per_rep.setdefault(self._rep_at(ev.t_ns), Counter())[ev.type] += 1
        minutes = max((m.detector.samples_seen + m.index_offset) / m.rate_hz for m in self._mics.values()) / 60 \
            if self._mics else 0.0
        clicks = sum(1 for ev in self.sound_events if ev.type == "click")
        return {"per_rep": {k: dict(v) for k, v in per_rep.items()}, "clicks": clicks, "minutes": round(minutes, 3),
                "clicks_per_min": round(clicks / minutes, 3) if minutes > 0 else 0.0}

    def _on_imu(self, sensor: str, frame: Frame) -> None:
        data, t_ns = frame.physical(), frame.sample_times_ns()  # once per frame: both consumers below share them
        self._sounds.on_imu(sensor, t_ns, data[:, :3], self.last_flexion_deg)
        kind = self.key.joint.rsplit("_", 1)[-1]
        if sensor not in JOINT_SENSORS.get(kind, ()):
            self.counters["imu_unknown_segment"] += 1
            return
        if self._angles is None:
            side_joint = self.key.joint if self.key.joint.split("_", 1)[0] in ("left", "right") else f"left_{kind}"
            self._angles = (KneeAngles(frame.rate_hz, side_joint) if kind == "knee"
                            else ShoulderAngles(frame.rate_hz, side_joint))
        imu = ImuChunk(sensor, t_ns, data[:, :3], data[:, 3:])
        if self._stream_origin_ns is None and sensor == JOINT_SENSORS[kind][0]:
            self._stream_origin_ns = frame.t0_ns - round(frame.first_index * 1e9 / frame.rate_hz)
        self._kin.update_imu(sensor, imu.t_ns, imu.accel_g, imu.gyro_dps)  # every chunk, before its angles
        # first_index: an index jump (lost samples) or restart (reboot) is a gap the orientation bridges.
        t_ns, angles = self._angles.update(sensor, imu.t_ns, imu.accel_g, imu.gyro_dps, frame.first_index)
        if not t_ns.size:
            return
        self.angles_calibrated = self._angles.calibrated
        backfill = self._angles.take_backfill() if isinstance(self._angles, KneeAngles) else None
        if backfill is not None:  # calibration just completed: what the stretch before it now shows
            found = self._kin.backfill_angles(*backfill)
            self.counters["valgus_backfilled"] += len(found)
            self._emit_kinematic(found)
        self.angle_history.append(t_ns, angles)
        self.last_angles = self.angle_history.latest()
        main = angles.get("flexion_deg", angles.get("elevation_deg"))
        self.last_flexion_deg = float(main[-1]) if main is not None else float("nan")
        if main is not None:  # joint sounds are tied to the angle at their instant
            self._sounds.on_angles(t_ns, main)
        # Store at angle_store_rate_hz: the first sample of each new time bucket.
        bucket = t_ns // round(1e9 / self.settings.angle_store_rate_hz)
        keep = bucket != np.concatenate(([self._angle_bucket], bucket[:-1]))
        self._angle_bucket = int(bucket[-1])
        if keep.any():
            self.sink.angles(self.key, t_ns[keep], {k: v[keep] for k, v in angles.items()})
        self.on_kinematics(t_ns, angles, imu)

    def on_kinematics(self, t_ns: np.ndarray, angles: dict[str, np.ndarray], imu: ImuChunk) -> None:
        """HOOK for the kinematic-event detectors (valgus, instability, locking): called once per new block
        of joint angles, ``t_ns`` (Unix ns, int64 (n,)) and ``angles`` ({name: deg (n,)}; knee:
        flexion_deg, abduction_deg, rotation_deg; shoulder: elevation_deg, plane_deg, rotation_deg; NaN
        where unknown, e.g. abduction before calibration, see ``self.angles_calibrated``), with the raw
        IMU frame that produced it (``imu``: one sensor's samples; the angles lag it by up to a frame of
        the other sensor). ``self.angle_history`` holds the last ``ANGLE_HISTORY_S`` seconds at the IMU
        rate. Detectors call ``self.sink.event(...)`` for what they find.

        The kinematic events (:class:`KinematicEvents`: valgus, instability, reps with ROM, locking) get every
        IMU chunk in ``_on_imu`` (also those that complete no angles) and the angles here.
        """
        # Through a long gap's settling time the giving-way detector alone gets provisional flexion and rotation.
        settling = self._angles.settling_angles if isinstance(self._angles, KneeAngles) else None
        self._emit_kinematic(self._kin.update_angles(t_ns, angles, settling))

    def _emit_kinematic(self, events: list[KinematicEvent]) -> None:
        """Kinematic events -> JointEvents; a rep also goes to ``self.reps`` (its event keeps the rep format:
        magnitude = peak flexion/elevation, deg; details rep, duration_s, t_peak_ns, min_flexion_deg, + ROM)."""
        origin = self._stream_origin_ns if self._stream_origin_ns is not None else 0
        for ev in events:
            if ev.type == "rep":
                d = ev.details
                self.reps.append(self._kin.reps[d["index"] - 1])
                rest = {k: v for k, v in d.items() if k not in ("index", "t_end_ns", "t_peak_ns")}
                ev = replace(ev, details={"rep": d["index"], "duration_s": (d["t_end_ns"] - ev.t_ns) / 1e9,
                                          "t_peak_ns": d["t_peak_ns"], **rest})
            self.sink.event(ev.to_joint_event(self.key.athlete, self.key.joint, self.key.session, origin,
                                              "+".join(JOINT_SENSORS.get(self._kin.joint_kind, ()))))

    def finish(self) -> None:
        """End of session: the microphone detectors decide their last frames, the sound tracker its last trains."""
        for sensor, st in self._mics.items():
            self._emit_transients(sensor, st, st.detector.flush())
        for ev in self._sounds.flush():
            self._on_click(ev)
        self._emit_kinematic(self._kin.finish())
