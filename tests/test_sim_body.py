"""The 3D body model, exercises, IMU model and kinematic events of the firmware simulator: numbers, not shapes.

Tolerances (documented here, derived in the comments of each test):
* joint-angle round trips: < 0.01 deg (floating point: ~1e-12 deg);
* analytic sensor acceleration vs a central-difference 2nd derivative of the positions at 1 kHz: < 0.005 g
  away from impacts (difference error ~ h^2/12 * d4x/dt4);
* 200 Hz band-limited IMU output vs the same numerical reference: < 0.1 g (the IMU's 75 Hz anti-alias filter
  smooths the fastest running/leg-swing transients; squats are within ~0.002 g);
* gyro integration over 10 s: < 1 deg (trapezoidal rotation-vector steps at 200 Hz).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy.signal import find_peaks
from scipy.spatial.transform import Rotation

from firmware_sim.body_model import (
    G_MPS2,
    PROFILES,
    Impact,
    Kinematics,
    RotTraj,
    SegmentMotion,
    Traj,
    cardan,
    get_profile,
    knee_angles_from_orientations,
    knee_joint_rotation,
    shoulder_angles_from_orientations,
    shoulder_joint_rotation,
)
from firmware_sim.exercises import EXERCISES, Keyframes, MotionOptions, plan_exercise, plan_kinematics
from firmware_sim.imu_model import (
    ACCEL_RANGE_G,
    IMU_RATE_HZ,
    INTERNAL_RATE_HZ,
    ImuErrorModel,
    imu_from_motion,
    random_mounting,
)
from firmware_sim.kinematic_events import EventSpec, InstabilitySpec, LockingSpec, ValgusSpec
from firmware_sim.scenario import Scenario
from firmware_sim.session import SessionKinematics, SimulatedSession, scenario_kinematics, simulate_session

ALL = sorted(EXERCISES)
REP_BASED = [e for e in ALL if e not in ("running", "leg_swing")]
H = 1.0 / INTERNAL_RATE_HZ


def _joint(exercise: str, side: str = "left") -> str:
    return f"{side}_{EXERCISES[exercise].joint_kind}"


def _scenario(exercise: str, side: str = "left", **kw: object) -> Scenario:
    base = {"seed": 4, "duration_s": 30.0, "exercise": exercise, "joint": _joint(exercise, side)}
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=[(e, s) for e in ALL for s in ("left", "right")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def stage(request: pytest.FixtureRequest) -> SessionKinematics:
    exercise, side = request.param
    st = scenario_kinematics(_scenario(exercise, side))
    st.plan.params["side"] = side  # type: ignore[assignment]  # for the round-trip test
    return st


@pytest.fixture(scope="module", params=ALL)
def session(request: pytest.FixtureRequest) -> SimulatedSession:
    """Default IMU errors (white noise + constant gyro bias), no misalignment."""
    return simulate_session(_scenario(request.param))


def _far_from_impacts(t: np.ndarray, stage: SessionKinematics, margin_s: float = 0.08) -> np.ndarray:
    ok = np.ones(t.shape, bool)
    for s in stage.plan.shocks:
        ok &= np.abs(t - s.t_peak_s) > margin_s
    for v in stage.plan.landings:
        ok &= np.abs(t - v.t_peak_s) > margin_s
    return ok


# ---------------------------------------------------------------- joint-angle conventions


@pytest.mark.parametrize("side", ["left", "right"])
def test_knee_angle_signs(side: str) -> None:
    lateral = 1.0 if side == "left" else -1.0  # world Y of the leg's lateral side
    # Valgus: the shank's long axis (ankle -> knee) tilts medially, i.e. the ankle moves laterally.
    z_shank = knee_joint_rotation(0.0, 10.0, 0.0, side)[:, 2]
    assert z_shank[1] == pytest.approx(-lateral * np.sin(np.radians(10.0)))
    # Internal rotation: the tibia's anterior axis turns medially.
    x_shank = knee_joint_rotation(0.0, 0.0, 10.0, side)[:, 0]
    assert x_shank[1] == pytest.approx(-lateral * np.sin(np.radians(10.0)))
    # Flexion: the shank's long axis tilts toward the thigh's anterior axis (the foot goes back).
    assert knee_joint_rotation(90.0, 0.0, 0.0, side)[:, 2] == pytest.approx([1.0, 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("side", ["left", "right"])
def test_shoulder_angle_signs(side: str) -> None:
    lateral = 1.0 if side == "left" else -1.0
    hand = -shoulder_joint_rotation(90.0, 0.0, 0.0, side)[:, 2]  # distal humerus direction
    assert hand == pytest.approx([0.0, lateral, 0.0], abs=1e-12)  # abduction: laterally
    hand = -shoulder_joint_rotation(90.0, 90.0, 0.0, side)[:, 2]
    assert hand == pytest.approx([1.0, 0.0, 0.0], abs=1e-12)  # forward flexion: anteriorly
    # Elevation = angle between the distal humerus (-z_arm) and the trunk's downward vertical (-z).
    assert shoulder_joint_rotation(170.0, 40.0, 0.0, side)[2, 2] == pytest.approx(np.cos(np.radians(170.0)))
    x_arm = shoulder_joint_rotation(0.0, 0.0, 20.0, side)[:, 0]  # internal rotation, arm hanging
    assert x_arm[1] == pytest.approx(-lateral * np.sin(np.radians(20.0)))


@pytest.mark.parametrize("side", ["left", "right"])
def test_random_angle_round_trip(side: str) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    R_prox = Rotation.random(n, random_state=1).as_matrix()  # any proximal orientation
    f, b, r = rng.uniform(-10, 160, n), rng.uniform(-45, 45, n), rng.uniform(-60, 60, n)
    got = knee_angles_from_orientations(R_prox, R_prox @ knee_joint_rotation(f, b, r, side), side)
    for key, want in (("flexion_deg", f), ("abduction_deg", b), ("rotation_deg", r)):
        np.testing.assert_allclose(got[key], want, atol=1e-9)
    e, p, rr = rng.uniform(0.5, 179.5, n), rng.uniform(-90, 179, n), rng.uniform(-90, 90, n)
    got = shoulder_angles_from_orientations(R_prox, R_prox @ shoulder_joint_rotation(e, p, rr, side), side)
    for key, want in (("elevation_deg", e), ("plane_deg", p), ("rotation_deg", rr)):
        np.testing.assert_allclose(got[key], want, atol=1e-8)
    # Single matrices give floats; the hanging arm gives plane 0 and the pure axial rotation.
    one = shoulder_angles_from_orientations(np.eye(3), shoulder_joint_rotation(0.0, 0.0, 25.0, side), side)
    assert one == pytest.approx({"elevation_deg": 0.0, "plane_deg": 0.0, "rotation_deg": 25.0})


def test_knee_convention_is_grood_suntay_yxz() -> None:
    f, b, r = 50.0, 8.0, 12.0
    ref = Rotation.from_euler("YXZ", [f, b, -r], degrees=True).as_matrix()  # intrinsic y, x', z''
    np.testing.assert_allclose(knee_joint_rotation(f, b, r, "left"), ref, atol=1e-14)


def test_session_angle_round_trip(stage: SessionKinematics) -> None:
    """The inverse functions recover the truth angles from the composed segment orientations (< 0.01 deg)."""
    kin, side = stage.kinematics, stage.plan.params["side"]
    if "thigh" in kin.segments:
        got = knee_angles_from_orientations(kin.segments["thigh"].R, kin.segments["shank"].R, side)
    else:
        got = shoulder_angles_from_orientations(kin.segments["trunk"].R, kin.segments["upper_arm"].R, side)
    for key, want in kin.angles.items():
        np.testing.assert_allclose(got[key], want.v, atol=0.01, err_msg=key)
    assert np.ptp(kin.angles["rotation_deg"].v) > 1.0  # the 3D angles are exercised, not all zero


def test_session_truth_matches_orientations() -> None:
    """The session's truth_angles are the inverse functions applied to its truth segment orientations."""
    for exercise, side in (("loaded_squat", "right"), ("overhead_press", "left"), ("pull_up", "right")):
        s = simulate_session(_scenario(exercise, side, duration_s=12.0))
        R = s.truth_segment_rotations
        if EXERCISES[exercise].joint_kind == "knee":
            got = knee_angles_from_orientations(R["thigh"], R["shank"], s.joint)
        else:
            got = shoulder_angles_from_orientations(R["trunk"], R["upper_arm"], s.joint)
        assert set(got) == set(s.truth_angles)
        for key in got:
            np.testing.assert_allclose(got[key], s.truth_angles[key], atol=0.01)
        main = "flexion_deg" if "flexion_deg" in got else "elevation_deg"
        np.testing.assert_array_equal(s.truth_flexion_deg, s.truth_angles[main])


# ---------------------------------------------------------------- trajectory algebra


def test_rotation_derivatives_match_finite_differences() -> None:
    t = np.arange(0.0, 2.0, 1e-4)
    a = Traj(np.sin(3 * t), 3 * np.cos(3 * t), -9 * np.sin(3 * t))
    b = Traj(0.5 * t * t, t, np.ones_like(t))
    c = Traj(np.cos(2 * t), -2 * np.sin(2 * t), -4 * np.cos(2 * t))
    rot = cardan("zxy", [a, b, c]) @ cardan("y", [a * b]).inv()
    h = t[1] - t[0]
    rel = np.einsum("nji,njk->nik", rot.R[:-2], rot.R[2:])
    w_num = Rotation.from_matrix(rel).as_rotvec() / (2 * h)
    np.testing.assert_allclose(w_num, rot.w[1:-1], atol=1e-5)
    np.testing.assert_allclose(np.gradient(rot.w, h, axis=0)[2:-2], rot.a[2:-2], atol=1e-4)


# ---------------------------------------------------------------- IMU physics per exercise


def test_rest_accel_is_one_g(session: SimulatedSession) -> None:
    rate = IMU_RATE_HZ
    still = slice(int(0.1 * rate), int((session.stand_start_s - 0.1) * rate))
    assert session.stand_start_s >= 1.0
    for s in session.sensors.values():
        assert np.mean(np.linalg.norm(s.accel_g()[still], axis=1)) == pytest.approx(1.0, abs=0.01)
        assert np.max(np.abs(s.gyro_dps()[still] - s.gyro_dps()[still].mean(axis=0))) < 1.0  # noise only


def _fine(stage: SessionKinematics, t0: float, seconds: float = 5.0) -> Kinematics:
    """The same plan evaluated on a 10 kHz grid: a finite-difference reference 100x more accurate than 1 kHz."""
    t = t0 + np.arange(int(seconds * 1e4)) * 1e-4
    return plan_kinematics(stage.plan, t, get_profile("medium"), stage.plan.params["side"])  # type: ignore[arg-type]


def test_accel_is_specific_force_of_numerical_positions(stage: SessionKinematics) -> None:
    """Accelerometer (noise-free) == R^T (a/g + z) with a = numerical 2nd derivative of the sensor positions."""
    plan = stage.plan
    # A window with movement (and, for the jumping/running exercises, impacts).
    t0 = plan.impacts[1].t_s - 2.0 if len(plan.impacts) > 1 else plan.stand_start_s + 0.5
    fine = _fine(stage, t0)
    h = fine.t_s[1] - fine.t_s[0]
    for name, m in fine.segments.items():
        # Second differences with steps h and 2h, Richardson-extrapolated: error O(h^4), so < 0.005 g even through
        # the 4 ms, 9 g footstrike shocks (a plain h^2/12 * d4x/dt4 error reaches 0.007 g there).
        x = m.position_m
        a_h = np.zeros_like(x)
        a_2h = np.zeros_like(x)
        a_h[1:-1] = (x[2:] - 2.0 * x[1:-1] + x[:-2]) / h**2
        a_2h[2:-2] = (x[4:] - 2.0 * x[2:-2] + x[:-4]) / (2.0 * h) ** 2
        a_num = (4.0 * a_h - a_2h) / 3.0
        f_num = np.einsum("nji,nj->ni", m.R, a_num / G_MPS2 + [0.0, 0.0, 1.0])
        inner = slice(3, -3)  # no central difference at the ends
        np.testing.assert_allclose(m.specific_force_g()[inner], f_num[inner], atol=0.005, err_msg=name)
    # 200 Hz output through the anti-alias filter vs a 1 kHz numerical reference, away from impacts.
    kin, idx = stage.kinematics, stage.imu_index
    far = _far_from_impacts(kin.t_s, stage)
    far[:3] = far[-3:] = False
    for name, m in kin.segments.items():
        a_num = np.gradient(np.gradient(m.position_m, H, axis=0), H, axis=0)
        f_num = np.einsum("nji,nj->ni", m.R, a_num / G_MPS2 + [0.0, 0.0, 1.0])
        acc, _ = imu_from_motion(m)
        np.testing.assert_allclose(acc[far[idx]], f_num[idx][far[idx]], atol=0.1, err_msg=name)


def test_gyro_is_numerical_rotation_rate(stage: SessionKinematics) -> None:
    """Gyro (noise-free) == vee(log(R(t-h)^T R(t+h))) / 2h within 0.05 deg/s (h = 0.1 ms)."""
    plan = stage.plan
    fine = _fine(stage, plan.stand_start_s + 0.5)
    h = fine.t_s[1] - fine.t_s[0]
    for name, m in fine.segments.items():
        rel = np.einsum("nji,njk->nik", m.R[:-2], m.R[2:])
        w_num = np.degrees(Rotation.from_matrix(rel).as_rotvec()) / (2 * h)
        np.testing.assert_allclose(m.gyro_dps()[1:-1], w_num, atol=0.05, err_msg=name)


def test_gyro_integrates_to_orientation_change(stage: SessionKinematics) -> None:
    """Integrating the noise-free 200 Hz gyro over 10 s reproduces the true orientation change within 1 deg."""
    kin, idx, plan = stage.kinematics, stage.imu_index, stage.plan
    i0 = int((plan.stand_start_s - 0.5) * IMU_RATE_HZ)
    i1 = i0 + 10 * IMU_RATE_HZ
    for name, m in kin.segments.items():
        _, gyro = imu_from_motion(m)
        w = np.radians(gyro[i0 : i1 + 1])
        steps = Rotation.from_rotvec(0.5 * (w[1:] + w[:-1]) / IMU_RATE_HZ).as_matrix()  # trapezoidal
        R = np.eye(3)
        for step in steps:  # 2000 small 3x3 products
            R = R @ step
        true = m.R[idx[i0]].T @ m.R[idx[i1]]
        err = np.degrees(np.linalg.norm(Rotation.from_matrix(true.T @ R).as_rotvec()))
        moved = np.degrees(np.linalg.norm(Rotation.from_matrix(true).as_rotvec()))
        assert err < 1.0, (name, err, moved)


def test_mounting_misalignment_rotates_gravity_by_the_programmed_angle() -> None:
    # A sensor tilted 12 deg about a horizontal axis sees gravity 12 deg away from the segment's z axis.
    n = 3 * 81
    still = SegmentMotion(np.arange(n) * H, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), np.zeros((n, 3)),
                          np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3)))
    M = random_mounting(np.random.default_rng(0), 12.0, axis=np.array([1.0, 1.0, 0.0]))
    acc, gyro = imu_from_motion(still, M)
    cos = acc @ [0.0, 0.0, 1.0] / np.linalg.norm(acc, axis=1)
    np.testing.assert_allclose(np.degrees(np.arccos(cos)), 12.0, atol=1e-6)
    np.testing.assert_allclose(gyro, 0.0, atol=1e-12)
    # In a session: each mounting is exactly the programmed rotation, and the resting accelerometer reads
    # gravity in the sensor frame M^T R^T z, i.e. rotated from the segment frame by M's tilt (<= 12 deg).
    s = simulate_session(_scenario("bodyweight_squat", misalignment_deg=12.0, duration_s=8.0,
                                   imu=ImuErrorModel.ideal()))
    still_i = slice(20, int((s.stand_start_s - 0.1) * IMU_RATE_HZ))
    for name, sig in s.sensors.items():
        M = s.mounting[name]
        assert np.degrees(Rotation.from_matrix(M).magnitude()) == pytest.approx(12.0, abs=1e-9)
        g_meas = sig.accel_g()[still_i].mean(axis=0)
        g_seg = s.truth_segment_rotations[name][still_i][0].T @ [0.0, 0.0, 1.0]
        g_expected = M.T @ g_seg
        angle = np.degrees(np.arccos(np.clip(g_meas @ g_expected / np.linalg.norm(g_meas), -1, 1)))
        assert angle < 0.05
        tilt = np.degrees(np.arccos(g_expected @ g_seg))
        measured_tilt = np.degrees(np.arccos(g_meas @ g_seg / np.linalg.norm(g_meas)))
        assert measured_tilt == pytest.approx(tilt, abs=0.05) and tilt <= 12.0 + 1e-9
    assert not np.allclose(s.mounting["thigh"], s.mounting["shank"])  # independent per sensor


def test_landing_spike_saturates_at_the_range() -> None:
    sc = _scenario("drop_landing", duration_s=12.0, imu=ImuErrorModel.ideal())
    st = scenario_kinematics(sc)
    ideal, _ = imu_from_motion(st.kinematics.segments["shank"])
    assert np.max(np.abs(ideal)) > 1.3 * ACCEL_RANGE_G  # the true spike is well above 16 g
    s = simulate_session(sc)
    acc = s.sensors["shank"].accel_g()
    assert np.max(np.abs(acc)) <= ACCEL_RANGE_G
    for imp in s.impacts:
        near = np.abs(s.truth_t_s - imp.t_s) < 0.05
        assert imp.peak_g > ACCEL_RANGE_G
        assert np.max(np.abs(acc[near])) >= ACCEL_RANGE_G - 1e-3  # clipped at full scale
    assert s.sensors["shank"].imu_raw[:, :3].max() == 32767  # +FS code


def test_imu_errors_are_as_configured() -> None:
    errors = ImuErrorModel(accel_noise_g=0.0, gyro_noise_dps=0.0, gyro_bias_min_dps=0.0, gyro_bias_max_dps=0.0,
                           gyro_bias_drift_dps_per_sqrt_s=0.05, accel_bias_g=0.03)
    sc = _scenario("bodyweight_squat", duration_s=60.0, imu=errors)
    s = simulate_session(sc)
    ideal = simulate_session(dataclasses.replace(sc, imu=ImuErrorModel.ideal()))
    for name, sig in s.sensors.items():
        drift = s.truth_gyro_drift_dps[name]
        np.testing.assert_allclose(sig.gyro_dps() - ideal.sensors[name].gyro_dps(), drift, atol=0.07)
        assert np.all(np.abs(s.truth_accel_bias_g[name]) <= 0.03)
        np.testing.assert_allclose((sig.accel_g() - ideal.sensors[name].accel_g()).mean(axis=0),
                                   s.truth_accel_bias_g[name], atol=0.001)
        # Random walk: SD after 60 s is 0.05 * sqrt(60) = 0.39 deg/s per axis; generous bounds for 3 axes.
        assert 0.02 < np.abs(drift[-1]).max() < 2.0 and np.all(drift[0] == 0.0)


# ---------------------------------------------------------------- exercises and reps


def test_profiles() -> None:
    assert {"small", "medium", "tall"} <= set(PROFILES)
    lengths = [get_profile(n).shank_length_m + get_profile(n).thigh_length_m for n in ("small", "medium", "tall")]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert get_profile("stiff").squat_depth_deg[1] < get_profile("medium").squat_depth_deg[0]
    with pytest.raises(KeyError, match="unknown athlete profile"):
        get_profile("giant")
    # The profile changes the geometry: a taller athlete's knee is higher.
    knee = {n: scenario_kinematics(_scenario("bodyweight_squat", profile=n, duration_s=3.0)).kinematics
            .extras["knee_position_m"][0, 2] for n in ("small", "tall")}
    assert knee["tall"] - knee["small"] == pytest.approx(0.09)


def test_reps_match_the_plan(session: SimulatedSession) -> None:
    reps = session.reps
    assert session.rep_count == len(reps) == len(session.peak_flexion_deg) >= 3
    ends = [r.t_end_s for r in reps]
    assert reps[0].t_start_s >= session.stand_start_s and ends[-1] <= session.duration_s - 0.25
    for r in reps:
        assert r.t_start_s < r.t_peak_s <= r.t_return_s < r.t_end_s
    assert np.all(np.diff([r.t_start_s for r in reps]) > 0)
    # The driving angle reaches each rep's planned peak at its peak time (exact evaluation of the plan).
    sc = session.scenario
    assert sc is not None
    st = scenario_kinematics(sc)
    kin = plan_kinematics(st.plan, np.array([r.t_peak_s for r in reps]), get_profile(sc.profile), sc.joint)
    driving = {"leg_swing": None}.get(session.exercise, kin.main_angle)
    if driving is not None:
        np.testing.assert_allclose(kin.angles[driving].v, session.peak_flexion_deg, atol=1e-9)
    else:
        np.testing.assert_allclose(st.plan.channels["hip_flexion"].evaluate(np.array([r.t_peak_s for r in reps])).v,
                                   session.peak_flexion_deg, atol=1e-9)
    # Natural variation: depth and tempo differ from rep to rep.
    assert np.std(session.peak_flexion_deg) > 0.5
    assert np.std([r.t_end_s - r.t_start_s for r in reps]) > 0.01


@pytest.mark.parametrize("exercise", REP_BASED)
def test_rep_count_matches_the_angle_peaks(exercise: str) -> None:
    """Each planned rep is one excursion of the driving angle (jump squat: countermovement + landing)."""
    s = simulate_session(_scenario(exercise, duration_s=40.0))
    t, main = s.truth_t_s, s.truth_flexion_deg
    sign = -1.0 if exercise == "pull_up" else 1.0  # the pull-up's rep peak is a minimum of elevation
    rest = main[int(0.5 * IMU_RATE_HZ)]
    amplitude = np.min(np.abs(np.array(s.peak_flexion_deg) - rest))
    prominence = 25.0 if exercise == "jump_squat" else 0.5 * amplitude  # lunge steps bend the knee ~20 deg
    peaks, _ = find_peaks(sign * (main - rest), prominence=prominence)
    per_rep = 2 if exercise == "jump_squat" else 1
    in_any = np.zeros(peaks.shape, bool)
    for r in s.reps:
        inside = (t[peaks] >= r.t_start_s) & (t[peaks] <= r.t_end_s)
        assert np.count_nonzero(inside) == per_rep
        in_any |= inside
    # Between reps the athlete rests (drop landing: steps back onto the box, one knee bend per rep).
    outside = np.count_nonzero(~in_any)
    assert outside == (0 if exercise != "drop_landing" else pytest.approx(s.rep_count, abs=1))


def test_continuous_exercises_count_whole_reps() -> None:
    run = simulate_session(_scenario("running", duration_s=20.0))
    strides = np.diff([r.t_start_s for r in run.reps])
    cadence = 2.0 / np.median(strides)
    assert 2.4 <= cadence <= 3.1  # steps per second (the instrumented leg strikes every other step)
    assert len(run.impacts) >= run.rep_count - 1
    # Footstrike shocks show on the shank as a several-g spike along its axis.
    acc = run.sensors["shank"].accel_g()
    for imp in run.impacts[2:6]:
        near = np.abs(run.truth_t_s - imp.t_s) < 0.03
        assert np.max(np.abs(acc[near, 2])) > 0.7 * imp.peak_g
    swing = simulate_session(_scenario("leg_swing", duration_s=20.0))
    assert swing.rep_count >= 8 and np.max(swing.truth_flexion_deg) < 45.0  # knee mostly extended


@pytest.mark.parametrize("exercise", ALL)
def test_deterministic(exercise: str) -> None:
    a, b, c = (simulate_session(_scenario(exercise, seed=s, duration_s=8.0)) for s in (9, 9, 10))
    for name in a.sensors:
        assert a.sensors[name].imu_raw.tobytes() == b.sensors[name].imu_raw.tobytes()
        assert a.sensors[name].mic_raw.tobytes() == b.sensors[name].mic_raw.tobytes()
        assert a.sensors[name].imu_raw.tobytes() != c.sensors[name].imu_raw.tobytes()
        assert a.sensors[name].mic_raw.tobytes() != c.sensors[name].mic_raw.tobytes()
    assert a.labels == b.labels and a.reps == b.reps and a.reps != c.reps


def test_same_first_reps_for_any_duration() -> None:
    for exercise in ("loaded_squat", "forward_lunge", "overhead_press"):
        short = simulate_session(_scenario(exercise, duration_s=15.0))
        long = simulate_session(_scenario(exercise, duration_s=40.0))
        assert long.reps[: short.rep_count] == short.reps


def test_motion_options() -> None:
    base = simulate_session(_scenario("bodyweight_squat", duration_s=30.0))
    fast = simulate_session(_scenario("bodyweight_squat", duration_s=30.0, motion=MotionOptions(tempo_scale=0.5)))
    dur = lambda s: np.mean([r.t_end_s - r.t_start_s for r in s.reps])  # noqa: E731
    assert dur(fast) == pytest.approx(0.5 * dur(base), rel=0.2)
    deep = simulate_session(_scenario("bodyweight_squat", motion=MotionOptions(depth_deg=70.0, max_reps=4)))
    assert deep.rep_count == 4 and np.mean(deep.peak_flexion_deg) == pytest.approx(70.0, abs=5.0)
    assert np.all(deep.truth_flexion_deg[deep.truth_t_s > deep.reps[-1].t_end_s] == 0.0)  # then stands still
    flat = simulate_session(_scenario("loaded_squat", motion=MotionOptions(sagittal_only=True), duration_s=15.0))
    assert np.all(flat.truth_angles["abduction_deg"] == 0.0) and np.all(flat.truth_angles["rotation_deg"] == 0.0)
    with pytest.raises(ValueError, match="max_reps"):
        plan_exercise("running", 10.0, get_profile("medium"), np.random.default_rng(0), MotionOptions(max_reps=3))


def test_jump_flight_is_free_fall_and_landing_is_an_impact() -> None:
    s = simulate_session(_scenario("jump_squat", duration_s=20.0, imu=ImuErrorModel.ideal()))
    assert len(s.impacts) == s.rep_count >= 3 and all(isinstance(i, Impact) for i in s.impacts)
    shank = s.sensors["shank"].accel_g()
    for imp in s.impacts[:3]:
        flight = (s.truth_t_s > imp.t_s - 0.2) & (s.truth_t_s < imp.t_s - 0.08)
        assert np.median(np.linalg.norm(shank[flight], axis=1)) < 0.1  # free fall reads ~0 g
        near = np.abs(s.truth_t_s - imp.t_s) < 0.03
        assert np.max(np.linalg.norm(shank[near], axis=1)) == pytest.approx(imp.peak_g + 1.0, rel=0.15)
    impact_labels = [lb for lb in s.labels if lb.type == "impact"]
    assert len(impact_labels) == len(s.impacts)
    assert all(lb.t_start_s <= i.t_s <= lb.t_end_s for lb, i in zip(impact_labels, s.impacts, strict=True))


# ---------------------------------------------------------------- kinematic events


def _events(exercise: str, events: EventSpec, **kw: object) -> SimulatedSession:
    return simulate_session(_scenario(exercise, events=events, **kw))


@pytest.mark.parametrize("side", ["left", "right"])
def test_valgus_labels_exactly_on_programmed_reps(side: str) -> None:
    s = _events("loaded_squat", EventSpec(valgus=ValgusSpec((2, 4), magnitude_deg=12.0)), side=side,
                duration_s=40.0)
    labels = [lb for lb in s.labels if lb.type == "valgus"]
    assert len(labels) == 2
    abd, t = s.truth_angles["abduction_deg"], s.truth_t_s
    for lb, rep_no in zip(labels, (2, 4), strict=True):
        r = s.reps[rep_no - 1]
        assert r.t_start_s < lb.t_start_s < r.t_peak_s <= r.t_return_s < lb.t_end_s < r.t_end_s
        in_rep = (t >= r.t_start_s) & (t <= r.t_end_s)
        assert lb.magnitude == pytest.approx(np.max(abd[in_rep]), abs=0.5)
        assert lb.magnitude == pytest.approx(12.0, abs=0.5)
        above = t[in_rep][abd[in_rep] > 5.0]
        assert lb.t_start_s == pytest.approx(above[0], abs=0.01) and lb.t_end_s == pytest.approx(above[-1], abs=0.01)
    for i, r in enumerate(s.reps):  # natural valgus stays below the 5 deg threshold elsewhere
        if i + 1 not in (2, 4):
            assert np.max(abd[(t >= r.t_start_s) & (t <= r.t_end_s)]) < 5.0
    # Valgus shows in the sensors: the knee moves medially, so the shank rolls about its anterior axis.
    ref = simulate_session(_scenario("loaded_squat", side=side, duration_s=40.0))
    r = s.reps[1]
    bottom = (t > r.t_peak_s) & (t < r.t_return_s)
    delta = (s.sensors["shank"].accel_g()[bottom, 1] - ref.sensors["shank"].accel_g()[bottom, 1]).mean()
    assert abs(delta) > 0.05


def test_instability_label_and_vertical_unloading() -> None:
    ref = simulate_session(_scenario("loaded_squat", duration_s=30.0))
    r = ref.reps[2]
    t0 = r.t_start_s + 0.5 * (r.t_peak_s - r.t_start_s)  # during the loaded descent
    s = _events("loaded_squat", EventSpec(instability=InstabilitySpec((t0,), magnitude_deg=30.0, duration_s=0.2)),
                duration_s=30.0)
    [lb] = [lb for lb in s.labels if lb.type == "instability"]
    assert (lb.t_start_s, lb.t_end_s, lb.magnitude) == pytest.approx((t0, t0 + 0.2, 30.0))
    t = s.truth_t_s
    flex_gain = s.truth_flexion_deg - ref.truth_flexion_deg
    assert flex_gain[np.argmin(np.abs(t - (t0 + 0.2)))] == pytest.approx(30.0, abs=0.5)
    assert np.all(np.abs(flex_gain[t < t0]) < 1e-9)
    pre, win = (t > t0 - 0.5) & (t < t0), (t >= t0) & (t < t0 + 0.25)
    az = s.sensors["shank"].accel_g()[:, 2]
    assert az[win].min() < az[pre].mean() - 0.2  # the body drops: unloading of the shank accelerometer
    # The rotational jerk: internal rotation in ~0.1 s, on both gyros' long axes.
    rot_gain = s.truth_angles["rotation_deg"] - ref.truth_angles["rotation_deg"]
    assert rot_gain[np.argmin(np.abs(t - (t0 + 0.12)))] > 8.0
    for name in ("thigh", "shank"):
        gz = s.sensors[name].gyro_dps()[:, 2] - ref.sensors[name].gyro_dps()[:, 2]
        assert np.max(np.abs(gz[win])) > 30.0


def test_locking_extension_keeps_the_knee_flexed() -> None:
    s = _events("bodyweight_squat", EventSpec(locking=LockingSpec((3,), short_deg=20.0, hold_s=1.5)),
                duration_s=30.0)
    [lb] = [lb for lb in s.labels if lb.type == "locking"]
    t, f = s.truth_t_s, s.truth_flexion_deg
    inside = (t >= lb.t_start_s) & (t <= lb.t_end_s)
    assert lb.magnitude == 20.0 and lb.t_end_s - lb.t_start_s == pytest.approx(1.5)
    assert np.min(f[inside]) >= 20.0 - 1e-6
    assert lb.t_start_s == pytest.approx(s.reps[2].t_end_s)
    assert s.reps[3].t_start_s > lb.t_end_s + 0.4  # the next rep waits for the release
    # Other reps extend fully.
    assert np.min(f[(t > s.reps[1].t_end_s) & (t < s.reps[2].t_start_s)]) == 0.0


def test_locking_range_restricts_the_rep() -> None:
    ref = simulate_session(_scenario("overhead_press", duration_s=30.0))
    s = _events("overhead_press", EventSpec(locking=LockingSpec((2,), short_deg=25.0, mode="range")),
                duration_s=30.0)
    [lb] = [lb for lb in s.labels if lb.type == "locking"]
    assert s.peak_flexion_deg[1] == pytest.approx(ref.peak_flexion_deg[1] - 25.0)
    assert (lb.t_start_s, lb.t_end_s) == (s.reps[1].t_start_s, s.reps[1].t_end_s)
    assert s.peak_flexion_deg[0] == ref.peak_flexion_deg[0]


def test_negative_examples_have_no_instability() -> None:
    """Jump landings and fast controlled descents: fast flexion, impacts/unloading, but no instability label."""
    jump = simulate_session(_scenario("jump_squat", duration_s=20.0))
    fast = simulate_session(_scenario("bodyweight_squat", duration_s=20.0, motion=MotionOptions(tempo_scale=0.5)))
    for s in (jump, fast):
        assert not [lb for lb in s.labels if lb.type == "instability"]
        rate = np.gradient(s.truth_flexion_deg, s.truth_t_s)
        assert rate.max() > 180.0  # as fast as a giving-way collapse (30 deg in 0.2 s peaks at ~280 deg/s)
    assert jump.impacts and [lb for lb in jump.labels if lb.type == "impact"]


def test_events_on_unsupported_exercises_are_rejected() -> None:
    from firmware_sim.kinematic_events import apply_events

    plan = plan_exercise("running", 10.0, get_profile("medium"), np.random.default_rng(0))
    assert not EXERCISES["running"].events
    # apply_events itself is permissive (the scenario loader rejects these); reps outside the session are ignored.
    plan2 = plan_exercise("loaded_squat", 10.0, get_profile("medium"), np.random.default_rng(0))
    out = apply_events(plan2, EventSpec(valgus=ValgusSpec((50,))), np.random.default_rng(0))
    assert out == [] and plan.reps


# ---------------------------------------------------------------- misc


def test_keyframes_are_c2_smooth() -> None:
    k = Keyframes.of([(0.0, 0.0), (1.0, 10.0), (1.5, 10.0), (2.5, -3.0)])
    t = np.arange(-0.5, 3.0, 1e-4)
    tr = k.evaluate(t)
    np.testing.assert_allclose(np.gradient(tr.v, t), tr.d1, atol=2e-3)
    np.testing.assert_allclose(np.gradient(tr.d1, t), tr.d2, atol=2e-2)
    assert tr.v[0] == 0.0 and tr.v[-1] == -3.0 and np.max(np.abs(np.diff(tr.d2))) < 0.1


def test_rotation_traj_inverse() -> None:
    t = np.linspace(0, 1, 50)
    a = Traj(t, np.ones_like(t), np.zeros_like(t))
    r = cardan("xy", [a, a * a])
    eye = r @ r.inv()
    np.testing.assert_allclose(eye.R, np.broadcast_to(np.eye(3), eye.R.shape), atol=1e-12)
    np.testing.assert_allclose(eye.w, 0.0, atol=1e-12)
    np.testing.assert_allclose(eye.a, 0.0, atol=1e-12)
    assert isinstance(RotTraj.identity(3), RotTraj) and isinstance(Kinematics, type)


def test_sixty_seconds_simulate_fast() -> None:
    t = time.perf_counter()
    s = simulate_session(_scenario("loaded_squat", duration_s=60.0,
                                   sounds={"crepitus": {"range_deg": [30.0, 90.0], "level": 0.3}}))
    elapsed = time.perf_counter() - t
    assert s.sensors["thigh"].mic_raw.shape == (60 * 16000,)
    assert elapsed < 6.0  # ~0.5 s on the development machine; loose for loaded CI runners
