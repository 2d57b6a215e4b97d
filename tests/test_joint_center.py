"""Relative heading from the joint centre's acceleration, and the gyro bias from standing still, on hand-made
rigid-body motion with known truth."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from analysis.joint_center import G, JointCentreHeading
from analysis.orientation import SegmentOrientation, StillBiasSettings
from analysis.segment_calibration import joint_centre_heading

RATE = 200.0
FINE = 10  # generated at 10x the rate, differentiated there, then decimated


def _wxyz(r: Rotation) -> np.ndarray:
    return r.as_quat()[:, [3, 0, 1, 2]]


def _sensor_signals(r_sensor: Rotation, pos: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accelerometer (g) and gyroscope (deg/s), sensor frame, of a sensor with world orientation ``r_sensor`` at
    world positions ``pos`` (m), sampled at times ``t`` (s, fine grid)."""
    dt = t[1] - t[0]
    acc_w = np.gradient(np.gradient(pos, dt, axis=0), dt, axis=0) + [0.0, 0.0, G]
    acc = r_sensor.inv().apply(acc_w) / G
    # Body rates from consecutive orientations (central difference of the rotation vector).
    rv = (r_sensor[:-2].inv() * r_sensor[2:]).as_rotvec() / (2 * dt)
    gyr = np.vstack((rv[:1], rv, rv[-1:]))
    return acc, np.degrees(gyr)


@pytest.fixture(scope="module")
def two_segments():
    """A knee-like pair moving in 3-D (flexion, abduction and rotation all varying, the joint centre travelling),
    sensors off the joint with tilted mountings; the shank's 6-D earth frame turned by 35 deg about the vertical."""
    n = int(30 * RATE * FINE)
    t = np.arange(n) / (RATE * FINE)
    w = 2 * np.pi
    p = np.column_stack((0.15 * np.sin(w * 0.5 * t), 0.03 * np.sin(w * 0.3 * t), 0.5 + 0.1 * np.cos(w * 0.5 * t)))
    r_thigh = Rotation.from_euler("ZYX", np.column_stack((0.3 + 0.2 * np.sin(w * 0.2 * t),
                                                          -0.6 - 0.5 * np.sin(w * 0.5 * t), 0.1 * np.sin(w * 0.7 * t))))
    knee = Rotation.from_euler("YXZ", np.column_stack((0.8 + 0.7 * np.sin(w * 0.5 * t + 0.3),
                                                       0.15 * np.sin(w * 1.1 * t), 0.1 * np.sin(w * 0.9 * t))))
    r_shank = r_thigh * knee
    c_t, c_s = np.array([0.07, 0.0, 0.12]), np.array([0.03, 0.0, -0.10])  # sensor on the segment, from the centre
    m_t, m_s = Rotation.from_rotvec([0.1, -0.2, 0.15]), Rotation.from_rotvec([-0.15, 0.1, 0.3])
    sens_t, sens_s = r_thigh * m_t, r_shank * m_s
    acc_t, gyr_t = _sensor_signals(sens_t, p + r_thigh.apply(c_t), t)
    acc_s, gyr_s = _sensor_signals(sens_s, p + r_shank.apply(c_s), t)
    delta = np.radians(35.0)
    keep = slice(FINE, None, FINE)  # drop the first fine samples (one-sided differences)
    return {"delta": delta, "t_ns": np.round(t[keep] * 1e9).astype(np.int64),
            "q_t": _wxyz(sens_t[keep]), "q_s": _wxyz(Rotation.from_rotvec([0.0, 0.0, -delta]) * sens_s[keep]),
            "acc_t": acc_t[keep], "gyr_t": gyr_t[keep], "acc_s": acc_s[keep], "gyr_s": gyr_s[keep],
            "lever_t": -m_t.inv().apply(c_t), "lever_s": -m_s.inv().apply(c_s)}


def test_heading_and_lever_arms_from_the_joint_centre(two_segments):
    d = two_segments
    use = np.ones(d["t_ns"].size, bool)
    delta, info, o_t, o_s = joint_centre_heading(d["q_t"], d["q_s"], d["gyr_t"], d["gyr_s"], d["acc_t"], d["acc_s"],
                                                 use, RATE)
    assert info > 0
    assert abs(np.degrees(delta - d["delta"])) < 0.2
    np.testing.assert_allclose(o_t, d["lever_t"], atol=0.005)
    np.testing.assert_allclose(o_s, d["lever_s"], atol=0.005)


def _stream(d: dict, frame: int) -> np.ndarray:
    est = JointCentreHeading(RATE, 0.0, d["lever_t"], d["lever_s"])
    r_t, r_s = Rotation.from_quat(d["q_t"][:, [1, 2, 3, 0]]), Rotation.from_quat(d["q_s"][:, [1, 2, 3, 0]])
    out = []
    for i in range(0, d["t_ns"].size, frame):
        sl = slice(i, i + frame)
        out.append(est.update(d["t_ns"][sl], r_t[sl], d["acc_t"][sl], d["gyr_t"][sl], r_s[sl], d["acc_s"][sl],
                              d["gyr_s"][sl])[0])
    return np.concatenate(out)


def test_streaming_heading_converges_and_does_not_depend_on_chunks(two_segments):
    whole = _stream(two_segments, 10**9)
    framed = _stream(two_segments, 10)
    np.testing.assert_allclose(framed, whole, atol=1e-9)
    # From a 0 prior (35 deg off) to the truth within the first seconds of movement.
    err = np.degrees(np.angle(np.exp(1j * (whole - two_segments["delta"]))))
    assert abs(err[int(5 * RATE)]) < 1.0 and np.abs(err[int(10 * RATE):]).max() < 0.3


def _swaying_sensor(bias_dps: np.ndarray, seconds: float = 40.0, still_s: float = 1.3):
    """A sensor standing still for ``still_s``, then swaying about both horizontal axes, with a constant gyro bias."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    s = np.clip(t - still_s, 0.0, None)
    r = Rotation.from_euler("XY", np.column_stack((0.3 * np.sin(2 * np.pi * 0.4 * s),
                                                   0.4 * np.sin(2 * np.pi * 0.25 * s))))
    acc = r.inv().apply([0.0, 0.0, 1.0])
    rv = (r[:-1].inv() * r[1:]).as_rotvec() * RATE
    gyr = np.degrees(np.vstack((rv[:1], rv))) + bias_dps + np.random.default_rng(1).normal(0, 0.1, (n, 3))
    return r, acc, gyr


def _heading_error_deg(q: np.ndarray, r_true: Rotation) -> np.ndarray:
    e = (Rotation.from_quat(q[:, [1, 2, 3, 0]]) * r_true.inv()).as_rotvec()
    return np.degrees(e[:, 2] - e[0, 2])


def test_gyro_bias_from_standing_still_stops_the_heading_drift():
    r, acc, gyr = _swaying_sensor(np.array([0.3, -0.2, 0.45]))
    plain = SegmentOrientation(RATE).update(acc, gyr)
    still = SegmentOrientation(RATE, still_bias=StillBiasSettings())
    fixed = still.update(acc, gyr)
    assert still.bias_updates == 1
    # Heading drift over the 36 s of swaying after the bias is known (VQF alone never sees the vertical part).
    after = int(4 * RATE)
    drift_plain = np.abs(np.diff(_heading_error_deg(plain, r)[[after, -1]]))[0]
    drift_fixed = np.abs(np.diff(_heading_error_deg(fixed, r)[[after, -1]]))[0]
    assert drift_plain > 10.0 and drift_fixed < 1.5, (drift_plain, drift_fixed)
    # The same whatever the chunking (the bias is set at a sample, not at a chunk boundary).
    framed = SegmentOrientation(RATE, still_bias=StillBiasSettings())
    parts = np.concatenate([framed.update(acc[i:i + 7], gyr[i:i + 7]) for i in range(0, len(acc), 7)])
    np.testing.assert_allclose(parts, fixed, atol=1e-9)


def test_still_bias_waits_for_a_long_enough_still_stretch():
    r, acc, gyr = _swaying_sensor(np.array([0.3, -0.2, 0.45]), seconds=10.0, still_s=0.8)
    est = SegmentOrientation(RATE, still_bias=StillBiasSettings(min_still_s=1.0))
    est.update(acc, gyr)
    assert est.bias_updates == 0
