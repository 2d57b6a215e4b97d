"""Per-sensor orientation from accelerometer + gyroscope (6D, no magnetometer), streaming.

Why VQF (Laidig & Seel 2023): it is the most accurate of the open 6D filters on the BROAD
benchmark, has a maintained C++ core with Python bindings, and its batch update carries its
state, so feeding 50 ms frames gives exactly what feeding the whole recording gives. No
magnetometer: steel gym equipment ruins it.
"""

from __future__ import annotations

import numpy as np
from vqf import VQF

G = 9.80665  # m/s^2 per g


class SegmentOrientation:
    """Streaming orientation of one sensor. ``update`` takes accel (g) and gyro (deg/s) in the
    sensor frame, shape (n, 3), and returns the 6D quaternions (w, x, y, z), sensor -> earth."""

    def __init__(self, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self._vqf = VQF(1.0 / rate_hz)

    def update(self, accel_g: np.ndarray, gyro_dps: np.ndarray) -> np.ndarray:
        gyr = np.ascontiguousarray(np.deg2rad(gyro_dps), dtype=float)
        acc = np.ascontiguousarray(np.asarray(accel_g, dtype=float) * G)
        return self._vqf.updateBatch(gyr, acc)["quat6D"]


def gravity_in_sensor(quat: np.ndarray) -> np.ndarray:
    """Unit 'up' vector of the earth frame expressed in the sensor frame, shape (n, 3).

    The third row of the rotation matrix of q (sensor -> earth) is earth-z in sensor coordinates.
    """
    w, x, y, z = quat.T
    return np.column_stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)))


def sagittal_inclination_deg(quat: np.ndarray) -> np.ndarray:
    """Segment inclination in its sagittal plane (degrees): rotation of the sensor about its own
    y axis (medio-lateral, the knee's flexion axis) away from upright; positive tilts the sensor's
    z axis toward its +x (anterior) axis. Needs no heading, so 6D orientation is enough."""
    up = gravity_in_sensor(quat)
    return np.rad2deg(np.arctan2(-up[:, 0], up[:, 2]))
