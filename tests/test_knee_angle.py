"""Knee flexion from two simulated IMUs against the simulator's truth; reps; chunking equivalence."""

import numpy as np
import pytest

from analysis.knee_angle import KneeFlexion
from analysis.rep_counter import RepCounter
from firmware_sim.session import simulate_squat_session


@pytest.fixture(scope="module")
def sim():
    return simulate_squat_session(30.0, seed=3)


def flexion_in_frames(sim, frame: int):
    """Feed thigh and shank alternately in frames of ``frame`` samples, as MQTT would."""
    knee = KneeFlexion(200.0)
    th, sh = sim.sensors["thigh"], sim.sensors["shank"]
    t_ns = np.round(th.imu_t_s() * 1e9).astype(np.int64)
    ts, fs = [], []
    for i in range(0, t_ns.size, frame):
        sl = slice(i, i + frame)
        for name, sig in (("shank", sh), ("thigh", th)):
            t, f = knee.update(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl])
            ts.append(t)
            fs.append(f)
    return np.concatenate(ts), np.concatenate(fs)


def test_flexion_matches_truth(sim):
    t_ns, flex = flexion_in_frames(sim, 10)
    truth = np.interp(t_ns / 1e9, sim.truth_t_s, sim.truth_flexion_deg)
    rmse = float(np.sqrt(np.mean((flex - truth) ** 2)))
    assert flex.size >= sim.truth_t_s.size - 1
    assert rmse < 2.0, rmse
    assert abs(flex.max() - max(sim.peak_flexion_deg)) < 3.0


def test_flexion_same_whole_or_in_frames(sim):
    t_whole, f_whole = flexion_in_frames(sim, 10**9)
    t_parts, f_parts = flexion_in_frames(sim, 10)
    n = min(t_whole.size, t_parts.size)
    np.testing.assert_array_equal(t_whole[:n], t_parts[:n])
    np.testing.assert_allclose(f_whole[:n], f_parts[:n], atol=1e-9)


def test_reps_and_peaks(sim):
    t_ns = np.round(sim.truth_t_s * 1e9).astype(np.int64)
    reps = RepCounter().update(t_ns, sim.truth_flexion_deg)
    assert len(reps) == sim.rep_count
    np.testing.assert_allclose([r.peak_flexion_deg for r in reps], sim.peak_flexion_deg, atol=0.5)
    # Same reps when the angle arrives 10 samples at a time.
    rc, chunked = RepCounter(), []
    for i in range(0, t_ns.size, 10):
        chunked += rc.update(t_ns[i:i + 10], sim.truth_flexion_deg[i:i + 10])
    assert chunked == reps
