"""Shoulder angles: the upper arm's long axis from a hanging-arm standing pose."""

import numpy as np
from scipy.spatial.transform import Rotation

from analysis.shoulder_angles import ShoulderAngles


def _abduction_session(arm_mounting: Rotation, rate: float = 200.0):
    """Stand 2 s with the arm hanging, abduct it to 90 deg in 1 s, hold 2 s (trunk upright and still).
    Segment -> world of the arm: R_x(elevation); sensor = segment * mounting. Gravity-only accelerometers."""
    n_stand, n_move, n_hold = int(2 * rate), int(1 * rate), int(2 * rate)
    u = np.linspace(0.0, 1.0, n_move)
    elev = np.radians(np.concatenate((np.zeros(n_stand), 90.0 * (u - np.sin(2 * np.pi * u) / (2 * np.pi)),
                                      np.full(n_hold, 90.0))))
    rate_seg = np.gradient(elev) * rate  # rad/s about the segment's x axis
    r_sensor = Rotation.from_rotvec(elev[:, None] * [1.0, 0.0, 0.0]) * arm_mounting
    acc = r_sensor.inv().apply([0.0, 0.0, 1.0])
    gyro = np.degrees(arm_mounting.inv().apply(rate_seg[:, None] * [1.0, 0.0, 0.0]))
    t_ns = np.arange(elev.size, dtype=np.int64) * 5_000_000
    return t_ns, acc, gyro, np.degrees(elev)


def test_hanging_arm_pose_removes_the_sensor_tilt_from_elevation():
    mounting = Rotation.from_rotvec(np.radians(12.0) * np.array([0.6, 0.8, 0.0]))
    t_ns, acc, gyro, elev = _abduction_session(mounting)
    sa = ShoulderAngles(200.0, "left_shoulder")
    still = np.zeros_like(gyro)
    sa.update("trunk", t_ns, np.tile([0.0, 0.0, 1.0], (t_ns.size, 1)), still)
    t, ang = sa.update("upper_arm", t_ns, acc, gyro)
    assert sa.arm_calibrated
    hold = t >= t_ns[-300]
    err = ang["elevation_deg"][hold] - elev[-300:]
    assert np.abs(err).max() < 1.0, np.abs(err).max()
    # Without a hanging pose (a session starting in the front rack) the tilt stays: it is not guessed.
    front_rack = ShoulderAngles(200.0, "left_shoulder")
    r0 = Rotation.from_rotvec([np.radians(75.0), 0.0, 0.0]) * mounting
    acc0 = np.tile(r0.inv().apply([0.0, 0.0, 1.0]), (400, 1))
    front_rack.update("trunk", t_ns[:400], np.tile([0.0, 0.0, 1.0], (400, 1)), still[:400])
    front_rack.update("upper_arm", t_ns[:400], acc0, still[:400])
    assert front_rack.calibrated and not front_rack.arm_calibrated
