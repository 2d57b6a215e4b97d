"""Score the kinematic detectors (valgus, instability, locking) on simulated sessions, truth or noisy angles.

    python bench/kinematic_events_dev.py [--first 100] [--sessions 48] [--noise] [--crosstalk] [--imu] [--extra 32]

Sessions are drawn like the standard set (``bench/standard_set.py``) but from other seeds (100 on: the
standard set's own 0-47 stay unseen), without sounds or link faults: the detectors see the simulator's TRUE
joint angles (optionally with estimator-like errors: offset, slow drift, white noise, and with ``--crosstalk``
a flexion-proportional error on abduction and rotation) plus its IMU signals; with ``--imu`` the angles the
analysis estimates from the simulated IMUs instead (:class:`analysis.knee_angles.KneeAngles`: orientation,
calibration, heading; the valgus of the reps before the calibration found by its backfill), as live minus the
gateway and the link. Knee sessions only then (shoulders are skipped). ``--extra N`` adds N sessions of
fast (tempo 0.5) and normal squats, lunges, step-downs, jumps, landings, running and leg swings with three
giving-way episodes each where the exercise allows. Prints per-type P/R/F1 and false alarms per 10 minutes.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.evaluation_metrics import Score, score_session  # noqa: E402
from analysis.kinematic_event_detectors import KinematicEvents  # noqa: E402
from analysis.knee_angles import KneeAngles  # noqa: E402
from bench.standard_set import _rounded, scenario_for  # noqa: E402
from firmware_sim.scenario import scenario_from_dict  # noqa: E402
from firmware_sim.session import SimulatedSession, simulate_session  # noqa: E402

KIN_TYPES = ("valgus", "instability", "locking")
EXTRA_EXERCISES = ("bodyweight_squat", "jump_squat", "drop_landing", "running", "step_down", "forward_lunge",
                   "loaded_squat", "leg_swing")


def dev_scenario(k: int) -> dict[str, Any]:
    """Standard-set-like scenario ``k`` (use k >= 100), kinematics only."""
    table = _rounded(scenario_for(k, 60.0))
    table["link"], table["sounds"] = {}, {"clicks": 0}
    return table


def extra_scenario(k: int) -> dict[str, Any]:
    """Negative-rich scenario ``k``: fast/normal tempo, giving way where possible (3 per session)."""
    ex = EXTRA_EXERCISES[k % len(EXTRA_EXERCISES)]
    table: dict[str, Any] = {
        "seed": 5000 + k, "duration_s": 60.0, "athlete": "ath-900", "profile": ("small", "medium", "tall")[k % 3],
        "joint": "left_knee" if k % 2 else "right_knee", "exercise": ex, "mounting": {"misalignment_deg": 10.0},
        "sounds": {"clicks": 0}, "events": {}}
    if k % 4 < 2:
        table["motion"] = {"tempo_scale": 0.5}
    if ex not in ("running", "leg_swing"):
        table["events"]["instability"] = {"times_s": [15.0, 30.0, 45.0]}
    return table


def noisy_angles(s: SimulatedSession, seed: int, crosstalk: bool = False) -> dict[str, np.ndarray]:
    """True angles plus estimator-like errors (deg): offset up to 2 (rotation 4), a slow drift up to 2 (rotation
    4), 0.3 white noise; with ``crosstalk`` abduction and rotation also get +-5 % of the flexion."""
    rng = np.random.default_rng(seed)
    n = s.truth_t_s.size
    out = {}
    for name, x in s.truth_angles.items():
        lvl = 2.0 if name == "rotation_deg" else 1.0
        walk = np.cumsum(rng.normal(0.0, 1.0, n))
        walk = walk / (np.abs(walk).max() + 1e-9) * 2.0 * lvl
        y = x + rng.uniform(-2.0, 2.0) * lvl + walk + rng.normal(0.0, 0.3, n)
        if crosstalk and name in ("abduction_deg", "rotation_deg"):
            y = y + rng.uniform(-0.05, 0.05) * s.truth_angles.get("flexion_deg", 0.0 * x)
        out[name] = y
    return out


def run_session(s: SimulatedSession, angles: dict[str, np.ndarray], frame: int | None = None) -> list[dict]:
    """Run :class:`KinematicEvents` on one session (IMU first, then angles; ``frame`` samples at a time)."""
    kind = "shoulder" if s.joint.endswith("shoulder") else "knee"
    kin = KinematicEvents(kind, s.joint.split("_")[0])
    t_ns = np.round(s.truth_t_s * 1e9).astype(np.int64)
    step = frame or t_ns.size
    events = []
    for i in range(0, t_ns.size, step):
        sl = slice(i, i + step)
        for name, sig in s.sensors.items():
            kin.update_imu(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl])
        events += kin.update_angles(t_ns[sl], {k: v[sl] for k, v in angles.items()})
    events += kin.finish()
    return [{"type": e.type, "t_s": e.t_ns / 1e9, "magnitude": e.magnitude, "details": e.details} for e in events]


def run_session_imu(s: SimulatedSession, frame: int = 10) -> tuple[list[dict], dict[str, np.ndarray]]:
    """:func:`run_session` on the angles :class:`KneeAngles` estimates from the session's IMUs (``frame`` samples at
    a time, both sensors in turn, the calibration's backfill handed over as the pipeline does). Returns the events
    and the estimated angles on the session's sample times (NaN where unknown)."""
    kin = KinematicEvents("knee", s.joint.split("_")[0])
    ka = KneeAngles(float(s.sensors["thigh"].imu_rate_hz), s.joint)
    t_ns = np.round(s.truth_t_s * 1e9).astype(np.int64)
    found, ts, parts = [], [], []
    for i in range(0, t_ns.size, frame):
        sl = slice(i, i + frame)
        for name in ("thigh", "shank"):
            sig = s.sensors[name]
            kin.update_imu(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl])
            t, ang = ka.update(name, t_ns[sl], sig.accel_g()[sl], sig.gyro_dps()[sl], i)
            if not t.size:
                continue
            back = ka.take_backfill()
            if back is not None:
                found += kin.backfill_angles(*back)
            found += kin.update_angles(t, ang)
            ts.append(t)
            parts.append(ang)
    found += kin.finish()
    t_est = np.concatenate(ts)
    est = {k: np.interp(t_ns, t_est, np.concatenate([p[k] for p in parts]), left=np.nan, right=np.nan)
           for k in ("flexion_deg", "abduction_deg", "rotation_deg")}
    events = [{"type": e.type, "t_s": e.t_ns / 1e9, "magnitude": e.magnitude, "details": e.details} for e in found]
    return events, est


def score(s: SimulatedSession, events: list[dict]) -> Score:
    labels = [{"type": lb.type, "t_start_s": lb.t_start_s, "t_end_s": lb.t_end_s} for lb in s.labels
              if lb.type in KIN_TYPES]
    return score_session(labels, [e for e in events if e["type"] in KIN_TYPES], s.duration_s)


def evaluate(tables: list[dict[str, Any]], noise: bool = False, crosstalk: bool = False,
             verbose: bool = False, imu: bool = False) -> tuple[Score, dict[str, Score]]:
    total, by_ex = Score(), {}
    for table in tables:
        if imu and not table["joint"].endswith("knee"):
            continue
        s = simulate_session(scenario_from_dict(table, source=f"dev {table['seed']}"))
        if imu:
            events, est = run_session_imu(s)
            sc = score(s, events)
            for k, v in est.items():
                if k not in sc.angle_n:  # the harness scores flexion and abduction
                    continue
                ok = np.isfinite(v)
                sc.angle_sq_sum[k] += float(np.sum((v[ok] - s.truth_angles[k][ok]) ** 2))
                sc.angle_n[k] += int(ok.sum())
        else:
            angles = noisy_angles(s, zlib.crc32(str(table["seed"]).encode()), crosstalk) if noise else s.truth_angles
            sc = score(s, run_session(s, angles))
        total.add(sc)
        by_ex.setdefault(s.exercise, Score()).add(sc)
        if verbose:
            bad = {t: (sc.by_type[t].fp, sc.by_type[t].fn) for t in KIN_TYPES if sc.by_type[t].fp or sc.by_type[t].fn}
            if bad:
                print(f"  seed {table['seed']} {s.exercise}: (fp, fn) {bad}")
    return total, by_ex


def table(total: Score, by_ex: dict[str, Score]) -> str:
    rows = [f"{total.sessions} sessions, {total.duration_s / 60:.0f} min",
            f"{'type':<12}{'TP':>5}{'FP':>5}{'FN':>5}{'P':>7}{'R':>7}{'F1':>7}{'FA/10min':>10}"]
    for t in KIN_TYPES:
        s = total.by_type[t]
        rows.append(f"{t:<12}{s.tp:>5}{s.fp:>5}{s.fn:>5}{s.precision:>7.3f}{s.recall:>7.3f}{s.f1:>7.3f}"
                    f"{total.false_alarms_per_10min(t):>10.2f}")
    if any(total.angle_n.values()):
        rows.append("angle RMSE (deg): " + ", ".join(f"{k} {total.angle_rmse(k):.2f}" for k in sorted(total.angle_n)
                                                      if total.angle_n[k]))
    rows.append("false alarms per exercise (valgus / instability / locking) and minutes:")
    for ex, sc in sorted(by_ex.items()):
        rows.append(f"  {ex:<18}" + " / ".join(str(sc.by_type[t].fp) for t in KIN_TYPES)
                    + f"   {sc.duration_s / 60:.0f} min")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--first", type=int, default=100, help="first scenario number [%(default)s]")
    p.add_argument("--sessions", type=int, default=48, help="standard-set-like sessions [%(default)s]")
    p.add_argument("--extra", type=int, default=0, help="extra negative-rich sessions [%(default)s]")
    p.add_argument("--noise", action="store_true", help="estimator-like angle errors")
    p.add_argument("--crosstalk", action="store_true", help="with --noise: flexion crosstalk on abduction/rotation")
    p.add_argument("--imu", action="store_true", help="angles estimated from the simulated IMUs (knee sessions only)")
    p.add_argument("-v", "--verbose", action="store_true", help="print sessions with errors")
    args = p.parse_args(argv)
    tables = [dev_scenario(k) for k in range(args.first, args.first + args.sessions)]
    tables += [extra_scenario(k) for k in range(args.extra)]
    print(table(*evaluate(tables, args.noise, args.crosstalk, args.verbose, args.imu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
