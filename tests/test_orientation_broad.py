"""The orientation stage on BROAD (inclination RMSE, streaming equivalence) and the BROAD evaluation
code itself on synthetic orientations whose error is known.

The BROAD trials live outside the repository (``<repo>/../shared/data/broad``); the tests that need
them skip when the folder is missing. The synthetic tests always run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from vqf import VQF

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.orientation import (  # noqa: E402
    G,
    SegmentOrientation,
    angular_rate_from_quat,
    estimate_gyro_delay_s,
    quat_from_rotvec,
    quat_multiply,
)
from bench.orientation_broad import (  # noqa: E402
    BROAD_GYRO_DELAY_S,
    align_reference,
    estimate_alignment,
    inclination_rmse_deg,
    load_trial,
    run_jointmon,
)

BROAD_DIR = REPO.parent / "shared" / "data" / "broad"
needs_broad = pytest.mark.skipif(not BROAD_DIR.is_dir(), reason=f"BROAD data not found at {BROAD_DIR}")

# Three trials: fast rotation, slow translation, tapping disturbances. vqf-default figures from the
# BROAD-definition evaluation, which gives 0.881 deg over all ten trials (the published 0.88).
VQF_DEFAULT_RMSE = {
    "06_undisturbed_fast_rotation_A": 0.804,
    "10_undisturbed_slow_translation_A": 0.299,
    "24_disturbed_tapping_A": 0.607,
}


def _axis_quat(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    rotvec = np.zeros((np.size(angle_rad), 3))
    rotvec[:, axis] = angle_rad
    return quat_from_rotvec(rotvec)


def _trajectory(n: int = 6000, rate_hz: float = 100.0, t_shift_s: float = 0.0) -> np.ndarray:
    """Smooth, well-excited orientation (n, 4), sensor -> earth: yaw * pitch * roll of sinusoids,
    sampled at ``t = k / rate - t_shift``."""
    t = np.arange(n) / rate_hz - t_shift_s
    yaw = 2.0 * np.sin(0.31 * t) + 0.4 * t
    pitch = 0.9 * np.sin(0.53 * t + 0.4) + 0.3 * np.sin(1.7 * t)
    roll = 1.1 * np.sin(0.71 * t + 1.0) + 0.2 * np.sin(2.3 * t)
    return quat_multiply(quat_multiply(_axis_quat(2, yaw), _axis_quat(1, pitch)), _axis_quat(0, roll))


# --- the evaluation code, on errors known by construction -------------------------------------


def test_heading_offset_costs_nothing() -> None:
    truth = _trajectory()
    est = quat_multiply(_axis_quat(2, np.full(len(truth), np.deg2rad(137.0))), truth)
    assert inclination_rmse_deg(est, truth, np.ones(len(truth), bool)) < 1e-5


def test_constant_tilt_error_of_2_deg_reads_2_deg() -> None:
    truth = _trajectory()
    est = quat_multiply(_axis_quat(0, np.full(len(truth), np.deg2rad(2.0))), truth)
    assert inclination_rmse_deg(est, truth, np.ones(len(truth), bool)) == pytest.approx(2.0, abs=1e-6)


def test_nan_reference_samples_and_rest_phases_are_left_out() -> None:
    truth = _trajectory()
    est = truth.copy()
    est[:1000] = quat_multiply(_axis_quat(1, np.full(1000, np.deg2rad(10.0))), truth[:1000])
    ref = truth.copy()
    ref[2000:2100] = np.nan
    movement = np.ones(len(truth), bool)
    movement[:1000] = False  # the 10 deg error is in a "rest" phase
    assert inclination_rmse_deg(est, ref, movement) < 1e-5


def test_alignment_removes_mounting_rotation_and_frame_offset() -> None:
    truth = _trajectory()
    n = len(truth)
    q_body = quat_from_rotvec(np.array([0.3, -0.5, 0.8]))  # marker -> IMU, ~57 deg
    q_frame = quat_multiply(_axis_quat(2, np.array([0.9]))[0], _axis_quat(0, np.array([np.deg2rad(3.0)]))[0])
    ref = quat_multiply(quat_multiply(q_frame, truth), q_body)
    est = quat_multiply(_axis_quat(2, np.full(n, -1.2)), truth)  # the estimate's own heading
    movement = np.ones(n, bool)

    assert inclination_rmse_deg(est, ref, movement) > 5.0  # not aligned: large
    assert inclination_rmse_deg(est, ref, movement, align=True) < 1e-4
    q_body_hat, q_level = estimate_alignment(est, ref, movement)
    assert abs(np.dot(q_body_hat, q_body)) == pytest.approx(1.0, abs=1e-8)
    aligned = align_reference(ref, q_body_hat, q_level)
    assert inclination_rmse_deg(est, aligned, movement) < 1e-4


def test_alignment_does_not_absorb_an_error_that_changes_direction() -> None:
    truth = _trajectory()
    n = len(truth)
    # 2 deg tilt about a horizontal axis that turns 6 times: no constant rotation explains it.
    phi = np.linspace(0.0, 12 * np.pi, n)
    axis = np.column_stack((np.cos(phi), np.sin(phi), np.zeros(n)))
    est = quat_multiply(quat_from_rotvec(axis * np.deg2rad(2.0)), truth)
    movement = np.ones(n, bool)
    assert inclination_rmse_deg(est, truth, movement) == pytest.approx(2.0, abs=1e-6)
    assert inclination_rmse_deg(est, truth, movement, align=True) == pytest.approx(2.0, abs=0.05)


def test_gyro_delay_estimate_recovers_a_known_delay() -> None:
    rate = 200.0
    truth = _trajectory(rate_hz=rate)
    delay_s = 1.3 / rate
    # A late gyroscope reports at t the rate of t - delay.
    gyro = angular_rate_from_quat(_trajectory(rate_hz=rate, t_shift_s=delay_s), rate)
    gyro[[0, -1]] = 0.0
    assert estimate_gyro_delay_s(gyro, truth, rate) == pytest.approx(delay_s, abs=0.05 / rate)


# --- the stage --------------------------------------------------------------------------------


def _chunked(stage: SegmentOrientation, acc_g: np.ndarray, gyro_dps: np.ndarray, frame_s: float) -> np.ndarray:
    """Feed in frames of ``frame_s`` (sizes vary by one sample, as real 50 ms frames do)."""
    edges = np.unique(np.round(np.arange(0.0, len(acc_g) / stage.rate_hz, frame_s) * stage.rate_hz).astype(int))
    edges = np.append(edges, len(acc_g))
    parts = [stage.update(acc_g[a:b], gyro_dps[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return np.concatenate(parts)


def test_streaming_equals_whole_on_synthetic_data() -> None:
    rate = 100.0
    truth = _trajectory(n=3000, rate_hz=rate)
    gyro_dps = np.rad2deg(np.nan_to_num(angular_rate_from_quat(truth, rate)))
    w, x, y, z = truth.T
    up = np.column_stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)))
    acc_g = up + np.random.default_rng(0).normal(0, 0.01, up.shape)
    for delay in (None, 0.004):
        whole = SegmentOrientation(rate, gyro_delay_s=delay).update(acc_g, gyro_dps)
        framed = _chunked(SegmentOrientation(rate, gyro_delay_s=delay), acc_g, gyro_dps, 0.05)
        np.testing.assert_allclose(framed, whole, rtol=0, atol=1e-12)


def test_no_delay_setting_is_plain_vqf() -> None:
    rate = 100.0
    truth = _trajectory(n=1000, rate_hz=rate)
    gyro = np.nan_to_num(angular_rate_from_quat(truth, rate))
    acc = np.tile([0.0, 0.0, G], (len(truth), 1))
    ours = SegmentOrientation(rate).update(acc / G, np.rad2deg(gyro))
    plain = VQF(1 / rate).updateBatch(np.ascontiguousarray(gyro), acc)["quat6D"]
    np.testing.assert_allclose(ours, plain, atol=1e-12)


@needs_broad
def test_streaming_equals_whole_on_a_broad_trial() -> None:
    trial = load_trial(BROAD_DIR / "21_undisturbed_fast_combined.mat")
    acc_g, gyro_dps = trial.acc / G, np.rad2deg(trial.gyr)
    whole = SegmentOrientation(trial.rate_hz, gyro_delay_s=BROAD_GYRO_DELAY_S).update(acc_g, gyro_dps)
    framed = _chunked(SegmentOrientation(trial.rate_hz, gyro_delay_s=BROAD_GYRO_DELAY_S), acc_g, gyro_dps, 0.05)
    assert framed.shape == whole.shape == (len(acc_g), 4)
    np.testing.assert_allclose(framed, whole, rtol=0, atol=1e-12)


@needs_broad
def test_jointmon_beats_vqf_default_on_broad() -> None:
    ours, theirs = [], []
    for name, published in VQF_DEFAULT_RMSE.items():
        trial = load_trial(BROAD_DIR / f"{name}.mat")
        vqf_quat = VQF(1 / trial.rate_hz).updateBatch(trial.gyr, trial.acc)["quat6D"]
        vqf_rmse = inclination_rmse_deg(vqf_quat, trial.quat_ref, trial.movement)
        # Pins the evaluation: these are the figures of the definition that reproduces 0.88 deg.
        assert vqf_rmse == pytest.approx(published, abs=0.01), name
        quat, _ = run_jointmon(trial, BROAD_GYRO_DELAY_S)
        rmse = inclination_rmse_deg(quat, trial.quat_ref, trial.movement)
        assert rmse <= 0.9, name
        ours.append(rmse)
        theirs.append(vqf_rmse)
    assert np.mean(ours) < np.mean(theirs)
    assert np.mean(ours) <= 0.9
