"""A simulated knee-sensor session: thigh + shank sensors (IMU 200 Hz + contact mic 16 kHz) during squats.

Sensor clock: sample 0 of every stream is t = 0 s; sample i of a stream at rate f is at i / f seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_sim.imu_model import IMU_RATE_HZ, simulate_imu
from firmware_sim.knee_kinematics import AthleteProfile, SquatRep, plan_squats, sensor_motion
from firmware_sim.mic_model import MIC_RATE_HZ, add_clicks, background, movement_activity, place_click_times
from jointmon.packets import StreamType, channel_scale, to_int16

SENSOR_NAMES = ("thigh", "shank")
MIC_SCALE_FS = float(channel_scale(StreamType.MIC_PCM16, 0)[0])  # FS per LSB
# Muscle sound is louder over the quadriceps (thigh sensor) than over the tibia (shank sensor).
RUMBLE_GAIN = {"thigh": 1.3, "shank": 1.0}


@dataclass
class SensorSignals:
    """The raw streams of one sensor, exactly as the firmware would sample them."""

    name: str  # "thigh" | "shank"
    imu_rate_hz: int  # 200
    mic_rate_hz: int  # 16000
    imu_raw: np.ndarray  # int16 (n, 6): ax ay az [LSB], gx gy gz [LSB], sensor frame
    imu_range_code: int
    mic_raw: np.ndarray  # int16 (m,) microphone LSBs (full scale 1.0 = 32768)

    def _imu_scale(self) -> np.ndarray:
        return channel_scale(StreamType.IMU, self.imu_range_code)

    def accel_g(self) -> np.ndarray:
        """Accelerometer, g, sensor frame, (n, 3)."""
        return self.imu_raw[:, :3] * self._imu_scale()[:3]

    def gyro_dps(self) -> np.ndarray:
        """Gyroscope, deg/s, sensor frame, (n, 3)."""
        return self.imu_raw[:, 3:] * self._imu_scale()[3:]

    def mic_fs(self) -> np.ndarray:
        """Microphone, full-scale units (|x| < 1), (m,)."""
        return self.mic_raw * MIC_SCALE_FS

    def imu_t_s(self) -> np.ndarray:
        """IMU sample times, seconds on the sensor clock."""
        return np.arange(self.imu_raw.shape[0]) / self.imu_rate_hz

    def mic_t_s(self) -> np.ndarray:
        """Microphone sample times, seconds on the sensor clock."""
        return np.arange(self.mic_raw.shape[0]) / self.mic_rate_hz


@dataclass
class Label:
    """A ground-truth event."""

    type: str  # "click" here ("snap", "crepitus", "valgus", ... later)
    joint: str  # e.g. "left_knee"
    t_start_s: float  # seconds since session start (sensor clock); click: onset sample time
    t_end_s: float  # click: envelope 40 dB below its onset level
    magnitude: float  # click: peak SNR in dB above the local noise-floor RMS (shank, +-100 ms background)


@dataclass
class SimulatedSession:
    """A whole simulated session with ground truth."""

    athlete: str  # pseudonym, e.g. "ath-001"
    joint: str  # "left_knee"
    duration_s: float
    seed: int
    sensors: dict[str, SensorSignals]  # "thigh", "shank"
    labels: list[Label]
    truth_t_s: np.ndarray  # IMU-rate time axis, seconds
    truth_flexion_deg: np.ndarray  # true knee flexion, degrees (0 = straight)
    rep_count: int  # number of squat reps fully inside the session
    peak_flexion_deg: list[float]  # per rep, degrees
    # Extra ground truth beyond the first spec (defaults keep the constructor backward compatible):
    reps: list[SquatRep] = field(default_factory=list)  # per-rep timing (s) and peak (deg)
    stand_start_s: float = 0.0  # the session starts with [0, stand_start_s) standing still
    truth_pitch_deg: dict[str, np.ndarray] = field(default_factory=dict)  # sensor rotation about world +Y, deg
    truth_gyro_bias_dps: dict[str, np.ndarray] = field(default_factory=dict)  # constant gyro bias (3,), deg/s


def simulate_squat_session(
    duration_s: float = 20.0,
    seed: int = 0,
    n_clicks: int = 5,
    athlete: str = "ath-001",
    joint: str = "left_knee",
) -> SimulatedSession:
    """Simulate ``duration_s`` seconds of bodyweight squats with ``n_clicks`` labelled cavitation clicks.

    Deterministic in ``seed``. Fewer than ``n_clicks`` clicks are placed when they do not fit (clicks
    only occur during descents/ascents, at least 1 s apart).
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    # One independent stream per component, so changing e.g. the mic model leaves the kinematics alone.
    ss_plan, ss_clicks, *ss_sensors = np.random.SeedSequence(seed).spawn(2 + 2 * len(SENSOR_NAMES))
    ss_imu = dict(zip(SENSOR_NAMES, ss_sensors[: len(SENSOR_NAMES)], strict=True))
    ss_mic = dict(zip(SENSOR_NAMES, ss_sensors[len(SENSOR_NAMES) :], strict=True))

    plan = plan_squats(duration_s, np.random.default_rng(ss_plan))
    n_imu = int(round(duration_s * IMU_RATE_HZ))
    n_mic = int(round(duration_s * MIC_RATE_HZ))
    t_imu = np.arange(n_imu) / IMU_RATE_HZ
    t_mic = np.arange(n_mic) / MIC_RATE_HZ

    motion = sensor_motion(plan, t_imu, AthleteProfile())
    imu = {name: simulate_imu(motion[name], np.random.default_rng(ss_imu[name])) for name in SENSOR_NAMES}

    # Muscle activity changes slowly: evaluate at the IMU rate and interpolate to the mic rate.
    activity = np.interp(t_mic, t_imu, movement_activity(plan, t_imu))
    mics = {
        name: background(RUMBLE_GAIN[name] * activity, np.random.default_rng(ss_mic[name])) for name in SENSOR_NAMES
    }
    rng_clicks = np.random.default_rng(ss_clicks)
    onsets = place_click_times(plan.moving_intervals(), n_clicks, rng_clicks)
    events = add_clicks(mics, onsets, rng_clicks, reference="shank")

    sensors = {
        name: SensorSignals(
            name=name,
            imu_rate_hz=IMU_RATE_HZ,
            mic_rate_hz=MIC_RATE_HZ,
            imu_raw=imu[name].raw,
            imu_range_code=imu[name].range_code,
            mic_raw=to_int16(mics[name], MIC_SCALE_FS),
        )
        for name in SENSOR_NAMES
    }
    labels = [Label("click", joint, e.onset_s, e.end_s, e.snr_db) for e in events]
    flexion, _, _ = plan.flexion(t_imu)
    return SimulatedSession(
        athlete=athlete,
        joint=joint,
        duration_s=float(duration_s),
        seed=seed,
        sensors=sensors,
        labels=labels,
        truth_t_s=t_imu,
        truth_flexion_deg=flexion,
        rep_count=len(plan.reps),
        peak_flexion_deg=[r.peak_flexion_deg for r in plan.reps],
        reps=list(plan.reps),
        stand_start_s=plan.stand_start_s,
        truth_pitch_deg={name: motion[name].pitch_deg for name in SENSOR_NAMES},
        truth_gyro_bias_dps={name: imu[name].gyro_bias_dps for name in SENSOR_NAMES},
    )
