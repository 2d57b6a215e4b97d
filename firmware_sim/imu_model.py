"""6-axis IMU model: true sensor motion -> noisy, biased, saturated, quantised int16 samples.

Sensor frame = segment frame (x anterior, y left, z up along the segment when standing).
Accelerometer: specific force in g, ``R^T (a_world / g + [0, 0, 1])`` (reads +1 g on z standing still).
Gyroscope: angular velocity in the sensor frame, deg/s; sagittal-plane motion only drives the y axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.knee_kinematics import SensorMotion
from jointmon.packets import StreamType, channel_scale, imu_range_code, to_int16

IMU_RATE_HZ = 200
ACCEL_RANGE_G = 16.0
GYRO_RANGE_DPS = 2000.0


@dataclass(frozen=True)
class ImuErrorModel:
    """Sensor errors. Noise densities are given as RMS per axis at the IMU rate (200 Hz)."""

    accel_noise_g: float = 0.003  # white noise RMS per axis, g
    gyro_noise_dps: float = 0.1  # white noise RMS per axis, deg/s
    gyro_bias_min_dps: float = 0.2  # constant bias magnitude per axis drawn from [min, max], deg/s, random sign
    gyro_bias_max_dps: float = 0.5
    accel_range_g: float = ACCEL_RANGE_G  # saturation (full scale), g
    gyro_range_dps: float = GYRO_RANGE_DPS  # saturation (full scale), deg/s


@dataclass(frozen=True)
class ImuOutput:
    """Quantised IMU stream: ``raw`` int16 (n, 6) = ax ay az gx gy gz in LSB, sensor frame."""

    raw: np.ndarray
    range_code: int
    gyro_bias_dps: np.ndarray  # the true constant bias added, deg/s, (3,) (ground truth for calibration tests)


def ideal_imu(motion: SensorMotion) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free accelerometer (g) and gyroscope (deg/s) readings, sensor frame, each (n, 3)."""
    accel = motion.specific_force_g()
    gyro = np.zeros_like(accel)
    # Rotation about the world Y axis only, and the sensor y axis stays parallel to it.
    gyro[:, 1] = motion.rate_dps
    return accel, gyro


def simulate_imu(motion: SensorMotion, rng: np.random.Generator, errors: ImuErrorModel | None = None) -> ImuOutput:
    """Add white noise and a constant gyro bias, saturate at the configured ranges, quantise to int16 LSBs."""
    errors = errors or ImuErrorModel()
    accel, gyro = ideal_imu(motion)
    n = accel.shape[0]
    sign = rng.choice([-1.0, 1.0], size=3)
    bias = sign * rng.uniform(errors.gyro_bias_min_dps, errors.gyro_bias_max_dps, size=3)
    accel = accel + rng.normal(0.0, errors.accel_noise_g, size=(n, 3))
    gyro = gyro + bias + rng.normal(0.0, errors.gyro_noise_dps, size=(n, 3))
    # Saturate at the physical full scale first; to_int16 then only clips the +FS code (32767 LSB).
    accel = np.clip(accel, -errors.accel_range_g, errors.accel_range_g)
    gyro = np.clip(gyro, -errors.gyro_range_dps, errors.gyro_range_dps)
    code = imu_range_code(errors.accel_range_g, errors.gyro_range_dps)
    raw = to_int16(np.hstack([accel, gyro]), channel_scale(StreamType.IMU, code))
    return ImuOutput(raw=raw, range_code=code, gyro_bias_dps=bias)
