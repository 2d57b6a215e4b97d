"""Simulated sensor sessions: two sensors per joint (IMU 200 Hz + contact mic 16 kHz) with complete ground truth.

:func:`simulate_session` runs a :class:`~firmware_sim.scenario.Scenario`: exercise plan -> kinematic events ->
3D body model -> IMU per sensor (mounting, errors, saturation, quantisation) -> microphones (the microphone
model's :func:`firmware_sim.joint_sounds.synthesize_microphones`) -> labels and truth.
:func:`simulate_squat_session` is the first version's entry point (bodyweight squats in the sagittal plane,
clicks at known times, clean link), now a scenario too.

Sensor clock: sample 0 of every stream is t = 0 s; sample i of a stream at rate f is at i / f seconds.
Sensors: knee "thigh" + "shank", shoulder "upper_arm" + "trunk" (upper back).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_sim.body_model import Impact, Kinematics, Label, get_profile, sagittal_inclination_deg
from firmware_sim.exercises import (
    EXERCISES,
    ExercisePlan,
    MotionOptions,
    Rep,
    Shock,
    plan_exercise,
    plan_kinematics,
)
from firmware_sim.imu_model import (
    DECIMATION,
    FIR_HALF,
    IMU_RATE_HZ,
    INTERNAL_RATE_HZ,
    apply_imu_errors,
    imu_from_motion,
    random_mounting,
)
from firmware_sim.kinematic_events import ProgrammedEvent, apply_events, event_labels
from firmware_sim.mic_model import MIC_RATE_HZ, add_clicks, background, place_click_times
from firmware_sim.scenario import Scenario
from jointmon.errors import ConfigError
from jointmon.packets import StreamType, channel_scale, to_int16

__all__ = [
    "SENSORS",
    "SENSOR_NAMES",
    "Impact",
    "Label",
    "SensorSignals",
    "SessionKinematics",
    "SimulatedSession",
    "scenario_kinematics",
    "simulate_session",
    "simulate_squat_session",
]

SENSOR_NAMES = ("thigh", "shank")  # the knee's sensors (first version's constant)
SENSORS = {"knee": ("thigh", "shank"), "shoulder": ("upper_arm", "trunk")}
MIC_SCALE_FS = float(channel_scale(StreamType.MIC_PCM16, 0)[0])  # FS per LSB
# Muscle sound is louder over the quadriceps / deltoid than over the tibia / upper back.
RUMBLE_GAIN = {"thigh": 1.3, "shank": 1.0, "upper_arm": 1.3, "trunk": 1.0}
_CLICK_REFERENCE = {"knee": "shank", "shoulder": "upper_arm"}  # sensor nearest the joint line
# The IMU side of a tendon snap: a 60 Hz jerk along the segment axis, peak 0.5 g on the sensor nearest the
# joint (shank / upper arm) 8 ms after the sound's onset, weaker on the other sensor.
SNAP_JERK_G = 0.5
SNAP_JERK_DELAY_S = 0.008
SNAP_JERK_OTHER_GAIN = {"knee": 0.6, "shoulder": 0.3}


@dataclass
class SensorSignals:
    """The raw streams of one sensor, exactly as the firmware would sample them."""

    name: str  # "thigh" | "shank" | "upper_arm" | "trunk"
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
class SimulatedSession:
    """A whole simulated session with ground truth. All times in seconds on the sensor clock."""

    athlete: str  # pseudonym, e.g. "ath-001"
    joint: str  # "left_knee" | "right_knee" | "left_shoulder" | "right_shoulder"
    duration_s: float
    seed: int
    sensors: dict[str, SensorSignals]  # knee: "thigh", "shank"; shoulder: "upper_arm", "trunk"
    labels: list[Label]  # every event, sorted by start time
    truth_t_s: np.ndarray  # IMU-rate time axis, seconds
    truth_flexion_deg: np.ndarray  # knee: true flexion (0 = straight); shoulder: true elevation; degrees
    rep_count: int  # number of reps (strides, swings) fully inside the session
    peak_flexion_deg: list[float]  # per rep: the rep's peak angle (Rep.peak_deg), degrees
    # Extra ground truth beyond the first spec (defaults keep the constructor backward compatible):
    reps: list[Rep] = field(default_factory=list)  # per-rep timing (s) and peak (deg)
    stand_start_s: float = 0.0  # the session starts with [0, stand_start_s) standing still
    truth_pitch_deg: dict[str, np.ndarray] = field(default_factory=dict)  # per sensor: its segment's sagittal
    # inclination (rotation about world +Y, deg); equals the sensor's pitch when mounted without misalignment
    truth_gyro_bias_dps: dict[str, np.ndarray] = field(default_factory=dict)  # constant gyro bias (3,), deg/s
    exercise: str = "bodyweight_squat"
    profile: str = "medium"
    truth_angles: dict[str, np.ndarray] = field(default_factory=dict)  # joint angles on truth_t_s, degrees
    impacts: list[Impact] = field(default_factory=list)  # footstrikes / landings (t_s, peak_g)
    link: dict[str, Any] = field(default_factory=dict)  # the scenario's raw [link] table (LinkFaults)
    sensor_segments: dict[str, str] = field(default_factory=dict)  # sensor name -> segment name
    mounting: dict[str, np.ndarray] = field(default_factory=dict)  # true sensor-to-segment rotations (3, 3)
    truth_segment_rotations: dict[str, np.ndarray] = field(default_factory=dict)  # segment -> world, (n, 3, 3)
    truth_gyro_drift_dps: dict[str, np.ndarray] = field(default_factory=dict)  # gyro bias random walk (n, 3)
    truth_accel_bias_g: dict[str, np.ndarray] = field(default_factory=dict)  # constant accel bias (3,), g
    scenario: Scenario | None = None


def _activity(kind: str, angle: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Muscle activity / movement intensity 0..1 from the main angle (deg) and its rate (deg/s)."""
    load = angle / 100.0 if kind == "knee" else angle / 150.0
    return np.clip(0.5 * np.clip(load, 0.0, 1.0) + 0.5 * np.clip(np.abs(rate) / 150.0, 0.0, 1.0), 0.0, 1.0)


def _legacy_activity(angle: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """The first version's activity proxy (0 standing, ~1-1.5 fast and deep), which scales its rumble model."""
    return 0.5 * np.clip(angle / 100.0, 0.0, 1.2) + 0.5 * np.clip(np.abs(rate) / 150.0, 0.0, 1.5)


def _legacy_microphones(
    kind: str, sensors: tuple[str, ...], joint: str, activity: np.ndarray, plan: ExercisePlan, n_clicks: int,
    ss_clicks: np.random.SeedSequence, ss_sensors: list[np.random.SeedSequence],
) -> tuple[dict[str, np.ndarray], list[Label]]:
    """The first version's microphone path: background per sensor + ``n_clicks`` cavitation clicks in movement."""
    mics = {name: background(RUMBLE_GAIN[name] * activity, np.random.default_rng(s))
            for name, s in zip(sensors, ss_sensors, strict=True)}
    rng_clicks = np.random.default_rng(ss_clicks)
    onsets = place_click_times(plan.moving_intervals(), n_clicks, rng_clicks)
    events = add_clicks(mics, onsets, rng_clicks, reference=_CLICK_REFERENCE[kind])
    return mics, [Label("click", joint, e.onset_s, e.end_s, e.snr_db) for e in events]


def _joint_sounds_available() -> bool:
    # find_spec, not try/except ImportError: a broken joint_sounds module must fail loudly, not fall back.
    return importlib.util.find_spec("firmware_sim.joint_sounds") is not None


def _seeds(seed: int) -> list[np.random.SeedSequence]:
    """One independent stream per component, so changing e.g. the mic model leaves the kinematics alone. The
    first six are the first version's layout (plan, clicks, IMU x2, mic x2): same seed, same squats and clicks.
    Then events, mounting, microphones."""
    return np.random.SeedSequence(seed).spawn(9)


@dataclass(frozen=True)
class SessionKinematics:
    """The kinematics stage of a session: the plan (with events applied), the programmed events and the body
    model evaluated on the internal 1 kHz grid ``kinematics.t_s``, which covers the IMU samples plus
    ``FIR_HALF`` samples at each end; IMU sample i is internal sample ``imu_index[i]``."""

    plan: ExercisePlan
    events: list[ProgrammedEvent]
    kinematics: Kinematics
    imu_index: np.ndarray


def scenario_kinematics(sc: Scenario) -> SessionKinematics:
    """Plan, events and true kinematics of a scenario (exactly those :func:`simulate_session` uses)."""
    info = EXERCISES[sc.exercise]
    if sc.joint_kind != info.joint_kind:
        raise ValueError(f"joint {sc.joint!r} cannot be used with exercise {sc.exercise!r}")
    if sc.duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {sc.duration_s}")
    profile = get_profile(sc.profile)
    ss = _seeds(sc.seed)
    plan = plan_exercise(sc.exercise, sc.duration_s, profile, np.random.default_rng(ss[0]), sc.motion)
    programmed = apply_events(plan, sc.events, np.random.default_rng(ss[6]))
    n_imu = int(round(sc.duration_s * IMU_RATE_HZ))
    # Internal grid at 1 kHz covering the IMU samples plus the anti-alias filter's half-length at each end.
    n_int = (n_imu - 1) * DECIMATION + 1 + 2 * FIR_HALF
    t_int = (np.arange(n_int) - FIR_HALF) / INTERNAL_RATE_HZ
    kin = plan_kinematics(plan, t_int, profile, sc.joint)
    return SessionKinematics(plan, programmed, kin, FIR_HALF + DECIMATION * np.arange(n_imu))


def _simulate(sc: Scenario, *, legacy_clicks: int | None = None) -> SimulatedSession:
    kind = EXERCISES[sc.exercise].joint_kind
    sensors = SENSORS[kind]
    ss = _seeds(sc.seed)
    ss_clicks, ss_imu, ss_legacy_mic, ss_mount, ss_mic = ss[1], ss[2:4], ss[4:6], ss[7], ss[8]
    stage = scenario_kinematics(sc)
    plan, programmed, kin, at_imu = stage.plan, stage.events, stage.kinematics, stage.imu_index
    n_imu = at_imu.shape[0]
    t_int = kin.t_s
    t_imu = np.arange(n_imu) / IMU_RATE_HZ

    main = kin.angles[kin.main_angle]
    n_mic = int(round(sc.duration_s * MIC_RATE_HZ))
    t_mic = np.arange(n_mic) / MIC_RATE_HZ
    impacts = plan.impacts
    if legacy_clicks is not None or not _joint_sounds_available():
        # The first version's microphone model: background + the scenario's click count (other sounds ignored).
        n_clicks = legacy_clicks if legacy_clicks is not None else int(sc.sounds.get("clicks", 0) or 0)
        act = np.interp(t_mic, t_imu, _legacy_activity(main.v[at_imu], main.d1[at_imu]))
        mics, sound_labels = _legacy_microphones(kind, sensors, sc.joint, act, plan, n_clicks, ss_clicks,
                                                 ss_legacy_mic)
    else:
        from firmware_sim.joint_sounds import activity_from_angular_rate, synthesize_microphones

        # Slow quantities: evaluated at 1 kHz and interpolated to the mic rate.
        angle_mic = np.interp(t_mic, t_int, main.v)
        act = np.interp(t_mic, t_int, activity_from_angular_rate(main.d1))
        try:
            mics, sound_labels = synthesize_microphones(
                t_mic, angle_mic, act, [(r.t_start_s, r.t_end_s) for r in plan.reps], impacts, dict(sc.sounds),
                list(sensors), sc.joint, np.random.default_rng(ss_mic),
            )
        except ConfigError as exc:
            raise ConfigError(f"{sc.source}: {exc}") from None
        snaps = [lb for lb in sound_labels if lb.type == "snap"]
        if snaps:
            # A snapping tendon is felt as well as heard: a small jerk of both sensors at each snap.
            plan.shocks = plan.shocks + [
                Shock(lb.t_start_s + SNAP_JERK_DELAY_S, SNAP_JERK_G, SNAP_JERK_OTHER_GAIN[kind], freq_hz=60.0,
                      tau_s=0.0025, impact=False) for lb in snaps]
            kin = plan_kinematics(plan, t_int, get_profile(sc.profile), sc.joint)

    mount_ss = dict(zip(sensors, ss_mount.spawn(len(sensors)), strict=True))
    imu_ss = dict(zip(sensors, ss_imu, strict=True))
    mounting = {n: random_mounting(np.random.default_rng(mount_ss[n]), sc.misalignment_deg) for n in sensors}
    imu = {}
    for name in sensors:  # two sensors
        accel, gyro = imu_from_motion(kin.segments[name], mounting[name], sc.imu.lowpass_hz)
        imu[name] = apply_imu_errors(accel, gyro, np.random.default_rng(imu_ss[name]), sc.imu)

    sensor_signals = {
        name: SensorSignals(
            name=name,
            imu_rate_hz=IMU_RATE_HZ,
            mic_rate_hz=MIC_RATE_HZ,
            imu_raw=imu[name].raw,
            imu_range_code=imu[name].range_code,
            mic_raw=to_int16(mics[name], MIC_SCALE_FS),
        )
        for name in sensors
    }
    labels = list(sound_labels) + event_labels(plan, programmed, kin, sc.joint)
    labels += [Label("impact", sc.joint, a, b, g) for a, b, g in plan.impact_windows()]
    labels.sort(key=lambda lb: (lb.t_start_s, lb.type))
    truth_angles = {k: v.v[at_imu] for k, v in kin.angles.items()}
    seg_R = {name: kin.segments[name].R[at_imu] for name in sensors}
    return SimulatedSession(
        athlete=sc.athlete,
        joint=sc.joint,
        duration_s=float(sc.duration_s),
        seed=sc.seed,
        sensors=sensor_signals,
        labels=labels,
        truth_t_s=t_imu,
        truth_flexion_deg=truth_angles[kin.main_angle],
        rep_count=len(plan.reps),
        peak_flexion_deg=[r.peak_deg for r in plan.reps],
        reps=list(plan.reps),
        stand_start_s=plan.stand_start_s,
        truth_pitch_deg={name: sagittal_inclination_deg(seg_R[name]) for name in sensors},
        truth_gyro_bias_dps={name: imu[name].gyro_bias_dps for name in sensors},
        exercise=sc.exercise,
        profile=sc.profile,
        truth_angles=truth_angles,
        impacts=impacts,
        link=dict(sc.link),
        sensor_segments={name: name for name in sensors},
        mounting=mounting,
        truth_segment_rotations=seg_R,
        truth_gyro_drift_dps={name: imu[name].gyro_drift_dps for name in sensors},  # type: ignore[misc]
        truth_accel_bias_g={name: imu[name].accel_bias_g for name in sensors},  # type: ignore[misc]
        scenario=sc,
    )


def simulate_session(scenario: Scenario) -> SimulatedSession:
    """Simulate a scenario (see :mod:`firmware_sim.scenario`): signals of both sensors, labels and truth.

    Deterministic in ``scenario.seed``. Uses :func:`firmware_sim.joint_sounds.synthesize_microphones` for the
    microphones when that module exists; otherwise background noise plus ``sounds.clicks`` clicks.
    """
    return _simulate(scenario)


def simulate_squat_session(
    duration_s: float = 20.0,
    seed: int = 0,
    n_clicks: int = 5,
    athlete: str = "ath-001",
    joint: str = "left_knee",
) -> SimulatedSession:
    """Simulate ``duration_s`` seconds of bodyweight squats with ``n_clicks`` labelled cavitation clicks.

    The first version's session: sagittal-plane squats (medium profile, no misalignment, white noise and a
    constant gyro bias), background microphone noise and clicks only during descents/ascents, at least 1 s
    apart (fewer than ``n_clicks`` when they do not fit), clean link. Deterministic in ``seed``.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    sc = Scenario(seed=seed, duration_s=float(duration_s), athlete=athlete, joint=joint, exercise="bodyweight_squat",
                  motion=MotionOptions(sagittal_only=True), sounds={"clicks": n_clicks},
                  source="simulate_squat_session")
    # The first version's click model keeps this entry point's contract (clicks at 20-30 dB SNR, >= 1 s apart).
    return _simulate(sc, legacy_clicks=n_clicks)
