"""Knee flexion, abduction (valgus) and rotation from the thigh and shank sensors, streaming.

Stages per sample: orientation of each sensor (:class:`analysis.orientation.SegmentOrientation`,
VQF in 6D: chosen as the most accurate open 6D filter on BROAD, with a maintained C++ core whose
batch update carries its state; see ``bench/README.md``) -> the shank's samples interpolated at
the thigh's times (:class:`analysis.sensor_pair.SensorPair`) -> sensor-to-segment calibration
(:mod:`analysis.segment_calibration`) -> relative heading of the two sensors from the acceleration of
the joint centre (:mod:`analysis.joint_center`) -> joint angles in the simulator's convention (Grood & Suntay as
a Cardan y-x-z sequence, see :func:`knee_angles_from_segments`).

Before the calibration completes (standing >= 1 s, then the first reps of movement) the output is
*provisional*: flexion from the sensors' sagittal inclinations assuming ideal mounting (off by up
to the misalignment, a few degrees), abduction and rotation NaN (unknown, not zero). ``calibrated``
tells which.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from analysis.joint_center import JointCentreHeading, JointCentreSettings
from analysis.orientation import SegmentOrientation, StillBiasSettings
from analysis.segment_calibration import (
    CalibrationSettings,
    KneeCalibration,
    KneeCalibrator,
    quat_wxyz_to_rotation,
    rot_z,
    segment_inclination_deg,
)
from analysis.sensor_pair import GapWindows, SensorPair

KNEE_ANGLES = ("flexion_deg", "abduction_deg", "rotation_deg")
# After a gap too long to bridge, a sensor's inclination is re-acquired from the accelerometer's running
# mean; over half a stride or squat phase the movement's own accelerations still tilt it by > 5 deg, so
# the angles stay unknown (NaN) for this long (s) after the first sample back.
GAP_SETTLE_S = 0.5
# These are also given through that settling time (``KneeAngles.settling_angles``), with the relative heading from
# before the gap: their level may be off by several degrees (no use for ROM, locking or sound angles), but their
# fast changes show a giving way right after a link gap (a collapse with a rotational jerk), else lost whole.
SETTLING_ANGLES = ("flexion_deg", "rotation_deg")
# Before the calibration completes the abduction is unknown; the aligned orientations of this last stretch
# (s) are kept so that, once it completes, the abduction of that stretch can be computed after the fact
# (``take_backfill``): a valgus on the first reps is then still found, late but with its true time.
BACKFILL_S = 30.0


def side_sign(joint: str) -> float:
    """+1 for a left joint ("left_knee"), -1 for a right one."""
    side = joint.split("_", 1)[0].lower()
    if side not in ("left", "right"):
        raise ValueError(f"joint must start with left_ or right_, got {joint!r}")
    return 1.0 if side == "left" else -1.0


def knee_angles_from_segments(r_thigh: Rotation, r_shank: Rotation, joint: str) -> dict[str, np.ndarray]:
    """Knee angles (deg) from thigh and shank segment -> world rotations (one common world frame).

    ``R_thigh^T R_shank = R_y(flexion) R_x(s abduction) R_z(-s rotation)``, ``s`` = +1 left, -1 right:
    flexion positive, abduction = valgus positive, rotation = tibial internal rotation positive
    (the simulator's ``knee_angles_from_orientations``). scipy's intrinsic "YXZ" Euler angles are
    exactly that sequence.
    """
    s = side_sign(joint)
    e = np.degrees(np.atleast_2d((r_thigh.inv() * r_shank).as_euler("YXZ")))
    return {"flexion_deg": e[:, 0], "abduction_deg": s * e[:, 1], "rotation_deg": -s * e[:, 2]}


class KneeAngles:
    """Feed each sensor's IMU frames (``update("thigh" | "shank", t_ns, accel_g, gyro_dps)``, sensor frame,
    (n, 3)); get ``(t_ns, {"flexion_deg", "abduction_deg", "rotation_deg"})`` (deg) at the thigh's sample
    times as soon as the shank covers them. Identical output however the data are cut into frames.

    After each ``update``, ``settling_angles`` holds the SETTLING_ANGLES of the rows it returned that lie in a long
    gap's settling time (NaN in the output), NaN elsewhere: for the giving-way detector only.
    """

    def __init__(self, rate_hz: float, joint: str = "left_knee",
                 calibration: CalibrationSettings | None = None, heading: JointCentreSettings | None = None) -> None:
        self.joint = joint
        side_sign(joint)
        self.rate_hz = rate_hz
        self._orient = {k: SegmentOrientation(rate_hz, still_bias=StillBiasSettings()) for k in ("thigh", "shank")}
        self._pair = SensorPair("thigh", "shank", 10, (slice(0, 4),))
        self.calibrator = KneeCalibrator(rate_hz, calibration, heading)
        self._heading_settings = heading
        self.heading: JointCentreHeading | None = None
        self._fed = 0  # aligned samples given to the provisional stage
        self._gaps = GapWindows(GAP_SETTLE_S)  # where either sensor's orientation is unknown
        self._pre: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # t, thigh, shank rows, unknown
        self._pre_keep = int(round(BACKFILL_S * rate_hz))
        self._backfill: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
        self._forget_at: list[int] = []  # starts (ns) of long gaps the live heading has not yet passed
        self._mount_inv: tuple[KneeCalibration, Rotation, Rotation] | None = None
        self.settling_angles: dict[str, np.ndarray] = {k: np.empty(0) for k in SETTLING_ANGLES}

    @property
    def calibrated(self) -> bool:
        return self.calibrator.result is not None

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray,
               first_index: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        added = self._gaps.added
        q = self._gaps.follow(self._orient[sensor], accel_g, gyro_dps, t_ns, first_index)
        if self._gaps.added > added:  # the relative heading after a long gap is new
            self._forget_at = sorted(self._forget_at + self._gaps.last_starts(self._gaps.added - added))
        self._pair.push(sensor, t_ns, np.column_stack((q, accel_g, gyro_dps)))
        t_out, th, sh = self._pair.pop()
        out = {k: np.full(t_out.size, np.nan) for k in KNEE_ANGLES}
        self.settling_angles = {k: out[k].copy() for k in SETTLING_ANGLES}
        if not t_out.size:
            return t_out, out
        unknown = self._gaps.mask(t_out)
        settling = self._gaps.settling(t_out)
        self._gaps.prune(int(t_out[-1]))
        start = 0
        if not self.calibrated:
            rows = np.column_stack((th[:, 0:4], sh[:, 0:4], th[:, 4:7], sh[:, 4:7], th[:, 7:10], sh[:, 7:10]))
            done = self.calibrator.feed(rows)
            start = t_out.size if done is None else done
            out["flexion_deg"][:start] = self._provisional_flexion(th[:start, 0:4], sh[:start, 0:4])
            self._keep_pre(t_out[:start], th[:start], sh[:start], unknown[:start])
            if done is not None:
                assert self.calibrator.result is not None
                self.heading = self._new_heading()
                # Gaps before the first calibrated row are behind the calibration already.
                self._forget_at = [t for t in self._forget_at if t >= t_out[min(done, t_out.size - 1)]]
                self._backfill = self._compute_backfill()
        if start < t_out.size:
            # Rows inside a gap window are left out of the heading estimate as well as the output (the
            # SETTLING_ANGLES of its settling part go to settling_angles).
            rows = start + np.flatnonzero(~unknown[start:])
            settle = start + np.flatnonzero(settling[start:])
            while rows.size or settle.size:
                if settle.size and (not rows.size or settle[0] < rows[0]):
                    j = settle.size if not rows.size else int(np.searchsorted(settle, rows[0]))
                    for name, v in self._settling_angles(th[settle[:j]], sh[settle[:j]]).items():
                        out[name][settle[:j]] = v
                    settle = settle[j:]
                    continue
                # A long gap before some of these rows: the heading forgets what it knew, from the first row after it.
                k = rows.size if not self._forget_at else int(np.searchsorted(t_out[rows], self._forget_at[0], "right"))
                k_settle = rows.size if not settle.size else int(np.searchsorted(rows, settle[0]))
                if min(k, k_settle):
                    n = min(k, k_settle)
                    for name, v in self._calibrated_angles(t_out[rows[:n]], th[rows[:n]], sh[rows[:n]]).items():
                        out[name][rows[:n]] = v
                rows = rows[min(k, k_settle):]
                if rows.size and k <= k_settle:
                    assert self.heading is not None
                    self.heading.forget()
                    self._forget_at.pop(0)
        settling[:start] = False  # before the calibration the flexion is provisional: none in gap windows
        self.settling_angles = {k: np.where(settling, out[k], np.nan) for k in SETTLING_ANGLES}
        for v in out.values():
            v[unknown] = np.nan
        return t_out, out

    def _settling_angles(self, th: np.ndarray, sh: np.ndarray) -> dict[str, np.ndarray]:
        """Flexion and rotation (deg) of aligned rows in the settling part of a gap window, with the relative
        heading as it was before the gap (not taught by these rows, so it cannot jump). The sensors' inclinations
        are re-acquired then (fast movement tilts them by several degrees) and the heading may have moved in the
        gap, so both may be off by several degrees, but their fast changes are mostly the gyroscopes': what a
        giving way right after a link gap (a collapse with a rotational jerk) shows. The abduction (a few degrees
        at most, off by as much) stays unknown."""
        cal, heading = self.calibrator.result, self.heading
        assert cal is not None and heading is not None
        if self._mount_inv is None or self._mount_inv[0] is not cal:
            self._mount_inv = (cal, Rotation.from_matrix(cal.thigh_mounting.T),
                               Rotation.from_matrix(cal.shank_mounting.T))
        seg_t = quat_wxyz_to_rotation(th[:, 0:4]) * self._mount_inv[1]
        seg_s = quat_wxyz_to_rotation(sh[:, 0:4]) * self._mount_inv[2]
        out = knee_angles_from_segments(seg_t, rot_z(np.full(len(th), heading.delta_rad)) * seg_s, self.joint)
        return {k: out[k] for k in SETTLING_ANGLES}

    def take_backfill(self) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """Once, right after the ``update`` in which the calibration completed: ``(t_ns, angles)`` of the samples
        output before it (at most the last ``BACKFILL_S``), recomputed with the final calibration (NaN inside
        gap windows). The live output of those samples stays as it was (provisional); this is for detectors
        that can still report what happened then. None otherwise."""
        out, self._backfill = self._backfill, None
        return out

    def _keep_pre(self, t: np.ndarray, th: np.ndarray, sh: np.ndarray, unknown: np.ndarray) -> None:
        if t.size:
            self._pre.append((t, th, sh, unknown))
        while len(self._pre) > 1 and sum(p[0].size for p in self._pre) - self._pre[0][0].size >= self._pre_keep:
            self._pre.pop(0)

    def _compute_backfill(self) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        pre, self._pre = self._pre, []
        if not pre:
            return None
        t, th, sh, unknown = (np.concatenate([p[i] for p in pre])[-self._pre_keep:] for i in range(4))
        assert self.calibrator.result is not None
        # Its own heading estimate, started like the live one from the calibration's: the live one is untouched.
        heading = self._new_heading()
        out = {k: np.full(t.size, np.nan) for k in KNEE_ANGLES}
        rows = np.flatnonzero(~unknown)
        if rows.size:
            for k, v in self._calibrated_angles(t[rows], th[rows], sh[rows], heading).items():
                out[k][rows] = v
        return t, out

    def _provisional_flexion(self, q_thigh: np.ndarray, q_shank: np.ndarray) -> np.ndarray:
        """Flexion (deg) before calibration: difference of the segments' sagittal inclinations, with each
        sensor's tilt on its segment corrected by its long axis from standing still (the mounting about
        the long axis is taken as ideal): the standing pose once it is found; before that, the latest
        still run so far (the session starts standing); ideal mounting before any still run."""
        n0 = self._fed
        n = q_thigh.shape[0]
        self._fed += n
        cal = self.calibrator
        axes = np.full((n, 6), np.nan)
        if cal.still_axes_rows is not None and cal.still_axes_rows.shape[0] >= n:
            axes[:] = cal.still_axes_rows[:n]
        stand_end = cal.stand_end
        if stand_end is not None and cal.stand_axes is not None:
            axes[min(max(stand_end - n0, 0), n):] = np.concatenate(cal.stand_axes)
        axes = np.where(np.isfinite(axes), axes, np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0]))
        return (segment_inclination_deg(q_shank, axes[:, 3:]) - segment_inclination_deg(q_thigh, axes[:, :3]))

    def _new_heading(self) -> JointCentreHeading:
        """A relative-heading estimate started from the calibration's, worth what the calibration's movement was."""
        cal = self.calibrator.result
        assert cal is not None
        return JointCentreHeading(self.rate_hz, cal.heading_rad, cal.lever_thigh_m, cal.lever_shank_m,
                                  cal.heading_information, self._heading_settings)

    def _calibrated_angles(self, t_ns: np.ndarray, th: np.ndarray, sh: np.ndarray,
                           heading: JointCentreHeading | None = None) -> dict[str, np.ndarray]:
        """Angles of aligned rows ``th``/``sh`` (q (4), accel g (3), gyro deg/s (3)) at times ``t_ns``."""
        cal, heading = self.calibrator.result, heading or self.heading
        assert cal is not None and heading is not None
        r_t, r_s = quat_wxyz_to_rotation(th[:, 0:4]), quat_wxyz_to_rotation(sh[:, 0:4])
        delta, settled = heading.update(t_ns, r_t, th[:, 4:7], th[:, 7:10], r_s, sh[:, 4:7], sh[:, 7:10])
        if self._mount_inv is None or self._mount_inv[0] is not cal:  # sensor -> segment, once per calibration
            self._mount_inv = (cal, Rotation.from_matrix(cal.thigh_mounting.T),
                               Rotation.from_matrix(cal.shank_mounting.T))
        seg_t, seg_s = r_t * self._mount_inv[1], r_s * self._mount_inv[2]
        out = knee_angles_from_segments(seg_t, rot_z(delta) * seg_s, self.joint)
        for k in ("abduction_deg", "rotation_deg"):  # they need the heading; the flexion barely does
            out[k] = np.where(settled, out[k], np.nan)
        return out
