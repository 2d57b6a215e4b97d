"""6-axis IMU model: true segment motion -> sensor-frame readings -> errors -> saturated, quantised int16 samples.

Frames: the sensor frame is the segment frame rotated by the mounting misalignment ``M`` (sensor-to-segment
rotation, ``R_sensor = R_segment @ M``; see :mod:`firmware_sim.body_model`). Standing upright with ideal
mounting the sensor axes are x anterior, y left, z up along the segment.

* Accelerometer: specific force in g, ``M^T R^T (a_world / g + [0, 0, 1])`` (reads +1 g on z standing still).
* Gyroscope: angular velocity in the sensor frame, deg/s, ``M^T w_segment``.

Signal chain (:func:`imu_from_motion`): the kinematics are evaluated at ``INTERNAL_RATE_HZ`` (1 kHz), filtered
by a linear-phase FIR low-pass (the IMU's digital filter, ``lowpass_hz``; centred, so it adds no delay and the
truth stays aligned) and decimated to ``IMU_RATE_HZ`` (200 Hz). Then (:func:`apply_imu_errors`): scale-factor
errors, constant biases, gyro bias random walk, white noise, saturation at the configured full scale, and
quantisation with :func:`jointmon.packets.to_int16`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.spatial.transform import Rotation

from firmware_sim.body_model import SegmentMotion
from firmware_sim.knee_kinematics import SensorMotion
from jointmon.packets import StreamType, channel_scale, imu_range_code, to_int16

IMU_RATE_HZ = 200
INTERNAL_RATE_HZ = 1000
DECIMATION = INTERNAL_RATE_HZ // IMU_RATE_HZ
ACCEL_RANGE_G = 16.0
GYRO_RANGE_DPS = 2000.0
FIR_TAPS = 81  # odd: a centred, zero-delay linear-phase filter; +-40 ms of support at 1 kHz
FIR_HALF = FIR_TAPS // 2


@dataclass(frozen=True)
class ImuErrorModel:
    """Sensor errors (the scenario's ``[imu]`` table). Defaults = the first version's model: white noise and a
    constant gyro bias only; the other errors are off until configured.

    Noise is given as RMS per axis at the IMU rate (200 Hz). Bias drift is a random walk: after t seconds the
    drift has a standard deviation of ``gyro_bias_drift_dps_per_sqrt_s * sqrt(t)`` per axis (deg/s).
    """

    accel_noise_g: float = 0.003  # white noise RMS per axis, g
    gyro_noise_dps: float = 0.1  # white noise RMS per axis, deg/s
    gyro_bias_min_dps: float = 0.2  # constant bias magnitude per axis drawn from [min, max], deg/s, random sign
    gyro_bias_max_dps: float = 0.5
    gyro_bias_drift_dps_per_sqrt_s: float = 0.0  # random-walk bias drift, deg/s/sqrt(s)
    accel_bias_g: float = 0.0  # constant accelerometer bias per axis, uniform in [-x, x], g
    accel_scale_error: float = 0.0  # per-axis scale-factor error, uniform in [-x, x] (fraction, e.g. 0.01)
    gyro_scale_error: float = 0.0
    accel_range_g: float = ACCEL_RANGE_G  # saturation (full scale), g: one of 2, 4, 8, 16
    gyro_range_dps: float = GYRO_RANGE_DPS  # saturation (full scale), deg/s: one of 250, 500, 1000, 2000
    lowpass_hz: float = 75.0  # digital low-pass before decimation to 200 Hz, Hz (-6 dB point)

    @staticmethod
    def ideal() -> ImuErrorModel:
        """No noise, bias, drift or scale errors (saturation and quantisation remain)."""
        return ImuErrorModel(accel_noise_g=0.0, gyro_noise_dps=0.0, gyro_bias_min_dps=0.0, gyro_bias_max_dps=0.0)


@dataclass(frozen=True)
class ImuOutput:
    """Quantised IMU stream: ``raw`` int16 (n, 6) = ax ay az gx gy gz in LSB, sensor frame."""

    raw: np.ndarray
    range_code: int
    gyro_bias_dps: np.ndarray  # the true constant gyro bias added, deg/s, (3,) (ground truth for calibration tests)
    gyro_drift_dps: np.ndarray | None = None  # the random-walk part of the gyro bias, deg/s, (n, 3)
    accel_bias_g: np.ndarray | None = None  # the true constant accelerometer bias, g, (3,)


def random_mounting(rng: np.random.Generator, magnitude_deg: float, axis: np.ndarray | None = None) -> np.ndarray:
    """Sensor-to-segment rotation ``M`` (3, 3): exactly ``magnitude_deg`` degrees about a uniformly random axis
    (or the given ``axis``, segment frame). 0 gives the identity."""
    v = rng.standard_normal(3) if axis is None else np.asarray(axis, dtype=float)  # drawn even if unused
    if magnitude_deg == 0.0:
        return np.eye(3)
    v = v / np.linalg.norm(v)
    return Rotation.from_rotvec(np.radians(magnitude_deg) * v).as_matrix()


@functools.lru_cache(maxsize=8)
def _fir(cutoff_hz: float) -> np.ndarray:
    return signal.firwin(FIR_TAPS, cutoff_hz, fs=INTERNAL_RATE_HZ)


def decimate(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Low-pass ``x`` ((N, k) at the internal rate, with ``FIR_HALF`` extra samples at each end) with the centred
    FIR and keep every ``DECIMATION``-th sample: output i is the filtered value at internal sample
    ``FIR_HALF + DECIMATION * i``."""
    h = _fir(float(cutoff_hz))
    n_out = (x.shape[0] - 2 * FIR_HALF - 1) // DECIMATION + 1
    # Only the kept outputs are computed: a (n_out, taps) window view per channel.
    win = np.lib.stride_tricks.sliding_window_view(x, FIR_TAPS, axis=0)[::DECIMATION][:n_out]
    return np.einsum("nkt,t->nk", win, h[::-1])


def imu_from_motion(motion: SegmentMotion, mounting: np.ndarray | None = None,
                    lowpass_hz: float = 75.0) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free, band-limited accelerometer (g) and gyroscope (deg/s) at 200 Hz, sensor frame, each (n, 3).

    ``motion`` is sampled at ``INTERNAL_RATE_HZ`` with ``FIR_HALF`` samples of margin before the first and after
    the last output sample (see :func:`decimate`).
    """
    both = np.hstack([motion.specific_force_g(mounting), motion.gyro_dps(mounting)])
    out = decimate(both, lowpass_hz)
    return out[:, :3], out[:, 3:]


def apply_imu_errors(accel_g: np.ndarray, gyro_dps: np.ndarray, rng: np.random.Generator,
                     errors: ImuErrorModel | None = None, rate_hz: float = IMU_RATE_HZ) -> ImuOutput:
    """Add scale-factor errors, biases, bias drift and white noise, saturate at the configured ranges, quantise.

    Every random draw happens whether or not its error is enabled, so switching one error on does not change
    the realisation of the others.
    """
    errors = errors or ImuErrorModel()
    n = accel_g.shape[0]
    sign = rng.choice([-1.0, 1.0], size=3)
    bias = sign * rng.uniform(errors.gyro_bias_min_dps, errors.gyro_bias_max_dps, size=3)
    accel_noise = rng.normal(0.0, 1.0, size=(n, 3))
    gyro_noise = rng.normal(0.0, 1.0, size=(n, 3))
    walk = rng.normal(0.0, 1.0, size=(n, 3))
    a_bias = rng.uniform(-1.0, 1.0, size=3) * errors.accel_bias_g
    a_scale = 1.0 + rng.uniform(-1.0, 1.0, size=3) * errors.accel_scale_error
    g_scale = 1.0 + rng.uniform(-1.0, 1.0, size=3) * errors.gyro_scale_error
    # Random walk: increments with SD sigma * sqrt(dt); zero at the first sample.
    drift = np.cumsum(walk, axis=0) * (errors.gyro_bias_drift_dps_per_sqrt_s * np.sqrt(1.0 / rate_hz))
    drift -= drift[:1]
    accel = accel_g * a_scale + a_bias + errors.accel_noise_g * accel_noise
    gyro = gyro_dps * g_scale + bias + drift + errors.gyro_noise_dps * gyro_noise
    # Saturate at the physical full scale first; to_int16 then only clips the +FS code (32767 LSB).
    accel = np.clip(accel, -errors.accel_range_g, errors.accel_range_g)
    gyro = np.clip(gyro, -errors.gyro_range_dps, errors.gyro_range_dps)
    code = imu_range_code(errors.accel_range_g, errors.gyro_range_dps)
    raw = to_int16(np.hstack([accel, gyro]), channel_scale(StreamType.IMU, code))
    return ImuOutput(raw=raw, range_code=code, gyro_bias_dps=bias, gyro_drift_dps=drift, accel_bias_g=a_bias)


# ---------------------------------------------------------------- the first version's API (planar model)


def ideal_imu(motion: SensorMotion) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free accelerometer (g) and gyroscope (deg/s) of the first version's planar :class:`SensorMotion`."""
    accel = motion.specific_force_g()
    gyro = np.zeros_like(accel)
    # Rotation about the world Y axis only, and the sensor y axis stays parallel to it.
    gyro[:, 1] = motion.rate_dps
    return accel, gyro


def simulate_imu(motion: SensorMotion, rng: np.random.Generator, errors: ImuErrorModel | None = None) -> ImuOutput:
    """First-version API: white noise and a constant gyro bias on a planar :class:`SensorMotion` sampled at 200 Hz."""
    errors = errors or ImuErrorModel()
    accel, gyro = ideal_imu(motion)
    n = accel.shape[0]
    sign = rng.choice([-1.0, 1.0], size=3)
    bias = sign * rng.uniform(errors.gyro_bias_min_dps, errors.gyro_bias_max_dps, size=3)
    accel = accel + rng.normal(0.0, errors.accel_noise_g, size=(n, 3))
    gyro = gyro + bias + rng.normal(0.0, errors.gyro_noise_dps, size=(n, 3))
    accel = np.clip(accel, -errors.accel_range_g, errors.accel_range_g)
    gyro = np.clip(gyro, -errors.gyro_range_dps, errors.gyro_range_dps)
    code = imu_range_code(errors.accel_range_g, errors.gyro_range_dps)
    raw = to_int16(np.hstack([accel, gyro]), channel_scale(StreamType.IMU, code))
    return ImuOutput(raw=raw, range_code=code, gyro_bias_dps=bias)
