"""Knee angles with sensor-to-segment calibration and heading correction against the simulator's truth."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from analysis.knee_angles import GAP_SETTLE_S, KneeAngles, knee_angles_from_segments
from firmware_sim.body_model import knee_angles_from_orientations, knee_joint_rotation
from firmware_sim.scenario import scenario_from_dict
from firmware_sim.session import simulate_session


def _session(exercise: str, seed: int, joint: str = "left_knee", misalignment: float = 12.0):
    return simulate_session(scenario_from_dict({
        "seed": seed, "duration_s": 20.0, "athlete": "ath-001", "joint": joint, "exercise": exercise,
        "mounting": {"misalignment_deg": misalignment}}, "test"))


def _run(sim, frame: int):
    ka = KneeAngles(200.0, sim.joint)
    th, sh = sim.sensors["thigh"], sim.sensors["shank"]
    t_ns = np.round(th.imu_t_s() * 1e9).astype(np.int64)
    ts, out = [], {k: [] for k in ("flexion_deg", "abduction_deg", "rotation_deg")}
    for i in range(0, t_ns.size, frame):
        sl = slice(i, i + frame)
        for name, sig in (("shank", sh), ("thigh", th)):
            t, a = ka.update(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl])
            ts.append(t)
            for k in out:
                out[k].append(a[k])
    return ka, np.concatenate(ts), {k: np.concatenate(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def squat():
    return _session("bodyweight_squat", 11, "right_knee")


def test_backfill_gives_the_calibrated_angles_before_calibration(squat):
    """After the calibration completes, the samples output before it (abduction NaN live) are recomputed once
    with the final calibration; they match the truth as closely as the live calibrated angles do."""
    ka = KneeAngles(200.0, squat.joint)
    th, sh = squat.sensors["thigh"], squat.sensors["shank"]
    t_ns = np.round(th.imu_t_s() * 1e9).astype(np.int64)
    backs, t_first = [], None
    for i in range(0, t_ns.size, 10):
        sl = slice(i, i + 10)
        for name, sig in (("shank", sh), ("thigh", th)):
            t, a = ka.update(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl])
            if t_first is None and np.isfinite(a["abduction_deg"]).any():
                t_first = t[np.isfinite(a["abduction_deg"])][0]
            b = ka.take_backfill()
            if b is not None:
                backs.append(b)
    assert len(backs) == 1 and ka.take_backfill() is None
    t_b, ang = backs[0]
    assert t_b.size > 200 and t_b[-1] < t_first
    ok = np.isfinite(ang["abduction_deg"])
    assert ok.mean() > 0.9
    for k in ("flexion_deg", "abduction_deg", "rotation_deg"):
        err = ang[k][ok] - np.interp(t_b[ok] / 1e9, squat.truth_t_s, squat.truth_angles[k])
        assert np.sqrt(np.mean(err**2)) < (3.0 if k != "rotation_deg" else 6.0), k


def test_convention_matches_the_simulator():
    rng = np.random.default_rng(0)
    r_thigh = Rotation.random(50, random_state=1)
    f, b, c = rng.uniform(0, 120, 50), rng.uniform(-15, 15, 50), rng.uniform(-20, 20, 50)
    for joint in ("left_knee", "right_knee"):
        side = joint.split("_")[0]
        r_shank = r_thigh * Rotation.from_matrix(knee_joint_rotation(f, b, c, side))
        got = knee_angles_from_segments(r_thigh, r_shank, joint)
        want = knee_angles_from_orientations(r_thigh.as_matrix(), r_shank.as_matrix(), side)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-9)


def test_known_misalignment_recovered(squat):
    ka, _, _ = _run(squat, 10**9)
    cal = ka.calibrator.result
    assert cal is not None
    for name, est in (("thigh", cal.thigh_mounting), ("shank", cal.shank_mounting)):
        true = squat.mounting[name]
        err = np.degrees(np.linalg.norm(Rotation.from_matrix(est @ true.T).as_rotvec()))
        mis = np.degrees(np.linalg.norm(Rotation.from_matrix(true).as_rotvec()))
        assert mis > 10.0  # the mounting really is off
        # The long axis (from standing) to < 1 deg; the full frame (the flexion axis at full extension, where the
        # tibia's coupled rotation and the valgus that grow with flexion are not yet there) to a degree or two.
        z_err = np.degrees(np.arccos(np.clip(est[2] @ true[2], -1, 1)))
        assert z_err < 1.0, (name, z_err)
        assert err < 2.0, (name, err)


def test_valgus_in_the_calibration_reps_is_not_read_as_varus_later():
    """Valgus on the very reps that calibrate (the first two squats): the flexion axes and the heading must not lean
    into it (a fit to 'abduction ~ 0' would, and then read every later rep as varus and hide the next valgus)."""
    sim = simulate_session(scenario_from_dict({
        "seed": 21, "duration_s": 25.0, "athlete": "ath-001", "joint": "left_knee", "exercise": "bodyweight_squat",
        "mounting": {"misalignment_deg": 12.0}, "events": {"valgus": {"reps": [1, 2, 5], "magnitude_deg": 12.0}}},
        "test"))
    ka, t_ns, ang = _run(sim, 10)
    cal = ka.calibrator.result
    assert cal is not None
    for name, est in (("thigh", cal.thigh_mounting), ("shank", cal.shank_mounting)):
        err = np.degrees(np.linalg.norm(Rotation.from_matrix(est @ sim.mounting[name].T).as_rotvec()))
        assert err < 1.5, (name, err)
    truth = np.interp(t_ns / 1e9, sim.truth_t_s, sim.truth_angles["abduction_deg"])
    ok = np.isfinite(ang["abduction_deg"])
    assert np.sqrt(np.mean((ang["abduction_deg"][ok] - truth[ok]) ** 2)) < 1.0
    rep5 = sim.reps[4]
    inside = ok & (t_ns / 1e9 >= rep5.t_start_s) & (t_ns / 1e9 <= rep5.t_end_s)
    assert abs(ang["abduction_deg"][inside].max() - 12.0) < 1.5


def test_calibration_waits_for_the_knee_to_bend():
    """Leg swings turn both sensors fast from the hip while the knee barely bends at first: the calibration waits
    until the knee has bent (otherwise the flexion axis' sign is a guess: the knee read as bending backward)."""
    sim = simulate_session(scenario_from_dict({
        "seed": 37, "duration_s": 12.0, "athlete": "ath-001", "joint": "right_knee", "exercise": "leg_swing",
        "mounting": {"misalignment_deg": 10.0}}, "test"))
    ka, t_ns, ang = _run(sim, 10)
    assert ka.calibrated
    t = t_ns / 1e9
    first = t[np.isfinite(ang["abduction_deg"])][0]
    assert sim.truth_angles["flexion_deg"][sim.truth_t_s < first].max() > 10.0
    err = ang["flexion_deg"] - np.interp(t, sim.truth_t_s, sim.truth_angles["flexion_deg"])
    assert np.sqrt(np.nanmean(err[t >= first] ** 2)) < 1.5


def test_same_output_whole_or_in_frames(squat):
    _, t_whole, a_whole = _run(squat, 10**9)
    _, t_parts, a_parts = _run(squat, 10)
    n = min(t_whole.size, t_parts.size)
    assert n > 3500
    np.testing.assert_array_equal(t_whole[:n], t_parts[:n])
    for k in a_whole:
        np.testing.assert_allclose(a_whole[k][:n], a_parts[k][:n], atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("exercise,seed", [("bodyweight_squat", 11), ("forward_lunge", 5), ("running", 7)])
def test_flexion_and_abduction_rmse_targets(exercise, seed):
    sim = _session(exercise, seed, "right_knee" if seed % 2 else "left_knee")
    ka, t_ns, ang = _run(sim, 10)
    assert ka.calibrated
    t = t_ns / 1e9
    for k, limit in (("flexion_deg", 3.5), ("abduction_deg", 3.5)):
        err = ang[k] - np.interp(t, sim.truth_t_s, sim.truth_angles[k])
        err = err[np.isfinite(err)]
        assert err.size > 0.5 * t.size
        assert np.sqrt(np.mean(err**2)) < limit, (exercise, k, np.sqrt(np.mean(err**2)))


def _run_with_gaps(sim, drop: dict[str, list[tuple[int, int]]], frame: int = 10):
    """``_run`` with the samples ``drop[sensor] = [(start, stop), ...]`` (indices) never delivered; every
    chunk carries its stream index, as a gateway frame does."""
    ka = KneeAngles(200.0, sim.joint)
    t_ns = np.round(sim.sensors["thigh"].imu_t_s() * 1e9).astype(np.int64)
    ts, out = [], {k: [] for k in ("flexion_deg", "abduction_deg", "rotation_deg")}
    for i in range(0, t_ns.size, frame):
        for name in ("shank", "thigh"):
            sig = sim.sensors[name]
            keep = np.arange(i, min(i + frame, t_ns.size))
            for a, b in drop.get(name, []):
                keep = keep[(keep < a) | (keep >= b)]
            if keep.size:
                t, a = ka.update(name, t_ns[keep], sig.accel_g()[keep], sig.gyro_dps()[keep], int(keep[0]))
                ts.append(t)
                for k in out:
                    out[k].append(a[k])
    return ka, np.concatenate(ts), {k: np.concatenate(v) for k, v in out.items()}


def test_gap_in_one_sensor_does_not_change_the_angles_after_it(squat):
    _, t_ref, ref = _run(squat, 10)
    # Lost packets (50 ms of the thigh, 100 ms of the shank): bridged with the gyroscope, no NaN.
    short = {"thigh": [(2400, 2410)], "shank": [(3000, 3020)]}
    ka, t, got = _run_with_gaps(squat, short)
    assert ka._orient["thigh"].gap_count == 1 and ka._orient["shank"].gap_count == 1
    common, i_ref, i_got = np.intersect1d(t_ref, t, return_indices=True)
    after = common >= t_ref[2400]
    diff = np.abs(got["flexion_deg"][i_got] - ref["flexion_deg"][i_ref])[after]
    assert np.isfinite(diff).all()
    assert diff.max() < 1.0, diff.max()
    # A 1.5 s disconnect of the shank: held, re-acquired, unknown (NaN) from the gap until the settling
    # time after it, then back within a few degrees of the uninterrupted stream.
    ka, t, got = _run_with_gaps(squat, {"shank": [(2400, 2700)]})
    assert ka._orient["shank"].long_gap_count == 1
    common, i_ref, i_got = np.intersect1d(t_ref, t, return_indices=True)
    flex = got["flexion_deg"][i_got]
    window = (common > t_ref[2399]) & (common < t_ref[2700] + GAP_SETTLE_S * 1e9)
    assert np.isnan(flex[window]).all() and np.isfinite(flex[~window & (common > t_ref[2000])]).all()
    diff = np.abs(flex - ref["flexion_deg"][i_ref])[common >= t_ref[2700] + GAP_SETTLE_S * 1e9]
    assert diff.max() < 3.0, diff.max()


def test_heading_after_a_long_gap_is_unknown_until_the_movement_shows_it(squat):
    """Through a 1.5 s disconnect the thigh turns (the tibia's coupled rotation) while its filter holds its heading:
    after it the relative heading is re-found from the next movement, and until then abduction and rotation are
    unknown (NaN) rather than jumping by the heading's correction (a jump in rotation looks like giving way)."""
    ka, t, got = _run_with_gaps(squat, {"thigh": [(2400, 2700)]})
    ts = t / 1e9
    back = ts > squat.truth_t_s[2700] + GAP_SETTLE_S
    flex_known = back & np.isfinite(got["flexion_deg"])
    abd_known = back & np.isfinite(got["abduction_deg"])
    assert flex_known.any() and abd_known.any()
    assert ts[abd_known][0] > ts[flex_known][0] + 0.2  # the flexion comes back first
    assert np.array_equal(abd_known, back & np.isfinite(got["rotation_deg"]))
    for k, limit in (("abduction_deg", 1.5), ("rotation_deg", 2.5)):
        err = got[k][abd_known] - np.interp(ts[abd_known], squat.truth_t_s, squat.truth_angles[k])
        assert np.abs(err).max() < limit, (k, np.abs(err).max())


def test_settling_angles_show_a_giving_way_right_after_a_gap():
    """A 1.4 s disconnect of both sensors ends 60 ms before the knee gives way. Through the gap's settling time the
    angles stay unknown, but ``settling_angles`` gives the flexion and the rotation (the heading from before the
    gap): off by several degrees while the re-acquired inclinations take in the collapse's accelerations, yet the
    giving way (a collapse with a rotational jerk) is found from them at its onset. (Without them the whole
    episode was lost.)"""
    from analysis.kinematic_event_detectors import KinematicEvents

    t0 = 12.3
    sim = simulate_session(scenario_from_dict({
        "seed": 11, "duration_s": 16.0, "athlete": "ath-001", "joint": "right_knee", "exercise": "bodyweight_squat",
        "mounting": {"misalignment_deg": 12.0}, "events": {"instability": {"times_s": [t0]}}}, "test"))
    i1 = int(np.searchsorted(sim.truth_t_s, t0 - 0.06))
    i0 = i1 - 280
    ka, kin = KneeAngles(200.0, sim.joint), KinematicEvents("knee", "right")
    t_ns = np.round(sim.sensors["thigh"].imu_t_s() * 1e9).astype(np.int64)
    ts, flex, settle, events, chunks = [], [], [], [], []
    for i in range(0, t_ns.size, 10):
        for name in ("shank", "thigh"):
            keep = np.arange(i, min(i + 10, t_ns.size))
            keep = keep[(keep < i0) | (keep >= i1)]
            if keep.size:
                sig = sim.sensors[name]
                t, a = ka.update(name, t_ns[keep], sig.accel_g()[keep], sig.gyro_dps()[keep], int(keep[0]))
                ts.append(t / 1e9)
                flex.append(a["flexion_deg"])
                settle.append(ka.settling_angles["flexion_deg"])
                assert all(v.size == t.size for v in ka.settling_angles.values())
                events += kin.update_angles(t, a, ka.settling_angles)
                chunks.append((t, a))
    ts, flex, settle = np.concatenate(ts), np.concatenate(flex), np.concatenate(settle)
    settling = (ts >= sim.truth_t_s[i1]) & (ts < sim.truth_t_s[i1] + GAP_SETTLE_S)
    assert settling.sum() > 90 and np.isnan(flex[settling]).all() and np.isnan(settle[~settling]).all()
    err = settle[settling] - np.interp(ts[settling], sim.truth_t_s, sim.truth_angles["flexion_deg"])
    assert np.abs(err).max() < 10.0 and np.sqrt(np.mean(err**2)) < 5.0, err
    found = [e for e in events if e.type == "instability"]
    assert len(found) == 1 and abs(found[0].t_ns / 1e9 - t0) < 0.1, found
    # Without them (the angles alone, unknown there) it is missed.
    alone = KinematicEvents("knee", "right")
    assert not [e for t, a in chunks for e in alone.update_angles(t, a) if e.type == "instability"]


def test_gaps_same_output_whole_or_in_frames(squat):
    # The gaps found from sample times in one whole array equal those from the indices of frames.
    drop = {"thigh": [(2400, 2410)], "shank": [(3000, 3300)]}
    _, t_parts, a_parts = _run_with_gaps(squat, drop, 10)
    _, t_whole, a_whole = _run_with_gaps(squat, drop, 10**9)
    n = min(t_whole.size, t_parts.size)
    assert n > 3000
    np.testing.assert_array_equal(t_whole[:n], t_parts[:n])
    for k in a_whole:
        np.testing.assert_allclose(a_whole[k][:n], a_parts[k][:n], atol=1e-6, equal_nan=True)


LINK_FAULT_SESSIONS = [  # (exercise, seed, [link]): lost packets, a disconnect, a reboot
    ("running", 4, {"drop_rate": 0.02, "jitter_ms": 5.0, "clock_drift_ppm": 30.0}),
    ("bodyweight_squat", 8, {"disconnects": [[6.0, 1.5]], "drop_rate": 0.01}),
    ("forward_lunge", 6, {"reboot_at_s": 7.0, "clock_drift_ppm": -20.0}),
]


@pytest.mark.parametrize("exercise,seed,link", LINK_FAULT_SESSIONS)
def test_flexion_rmse_target_with_link_faults(tmp_path, exercise, seed, link):
    # Through the gateway (sequence and clock checks, gap flags) and the whole offline analysis, as
    # `jointmon eval` scores the standard set; the target is 3 deg.
    from analysis.evaluation import evaluate_session
    from sensor_gateway.recorder import record_simulated_session

    sim = simulate_session(scenario_from_dict({
        "seed": seed, "duration_s": 14.0, "athlete": "ath-001", "joint": "right_knee" if seed % 2 else "left_knee",
        "exercise": exercise, "mounting": {"misalignment_deg": 12.0}, "link": link}, "test"))
    record_simulated_session(sim, tmp_path / "s.jmrec")
    rmse = evaluate_session(tmp_path / "s.jmrec").score.as_dict()["angle_rmse_deg"]
    assert rmse["flexion_deg"] < 3.5, rmse


def test_angles_known_again_within_a_second_after_a_reboot(tmp_path):
    """A sensor up for > 36 min (its u32 microsecond clock past 2^31) reboots: the gateway must take its restarted
    stream at once. Its packets were dropped as stale until the new clock passed the old one - 2^31 us (4-11 s on
    the standard set), and the knee angles stayed unknown that long after the link came back."""
    from analysis.offline import analyze_path
    from firmware_sim.link_faults import REBOOT_OUTAGE_S
    from sensor_gateway.recorder import record_simulated_session

    reboot_s = 7.0
    sim = simulate_session(scenario_from_dict({
        "seed": 6, "duration_s": 14.0, "athlete": "ath-001", "joint": "left_knee", "exercise": "forward_lunge",
        "mounting": {"misalignment_deg": 12.0},
        "link": {"reboot_at_s": reboot_s, "clock_offset_us": 2_150_000_000}}, "test"))
    record_simulated_session(sim, tmp_path / "s.jmrec")
    result = analyze_path(tmp_path / "s.jmrec")
    (t_ns, angles), = result.angles.values()
    t_s = (t_ns - result.origin_ns) / 1e9
    flex = angles["flexion_deg"]
    back = reboot_s + REBOOT_OUTAGE_S + 1.0
    after = (t_s > back) & (t_s < back + 2.0)
    assert np.count_nonzero(after) > 90 and np.isfinite(flex[after]).all()  # 50 Hz angle store, no hole
    assert np.isnan(flex[(t_s > reboot_s + 0.1) & (t_s < reboot_s + REBOOT_OUTAGE_S)]).all()
