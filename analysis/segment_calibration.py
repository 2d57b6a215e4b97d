"""Sensor-to-segment calibration of a knee's two sensors from standing still plus a functional movement.

Segment frames (as in the simulator's body model): standing upright every segment frame is the
world frame, x anterior, y left, z up along the segment. A sensor's frame is its segment frame
rotated by the mounting ``M`` (sensor -> segment): ``R_sensor = R_segment @ M``, so
``R_segment = R_sensor @ M.T`` and the rows of ``M`` are the segment's x, y, z axes in sensor
coordinates.

* Standing still (>= ``still_min_s``, every session starts so): the mean accelerometer is the
  segment's long axis ``z`` in sensor coordinates (the segment is upright).
* Functional movement (the first squats, lunges, swings or strides, until each sensor has turned
  ``movement_rotation_deg`` and the knee has bent through ``movement_flexion_deg``):

  1. The heading offset of the two 6D earth frames and the lever arms to the joint centre, from the
     joint centre's acceleration (:mod:`analysis.joint_center`); no assumption on the joint angles.
  2. The knee's flexion axis in each sensor frame from the relative angular velocity of the two
     segments (Seel et al. 2012 identify the hinge axis from gyroscopes), with the tibia's axial
     rotation (along the shank's long axis) removed: its principal axis, made perpendicular to ``z``
     (Gram-Schmidt).
  3. That principal axis leans toward whatever abduction the calibration reps had, and a valgus rep
     among them would then read as varus on every later rep (crosstalk). Abduction grows from zero at
     full extension with flexion (the extended knee is locked; valgus is a flexed-knee event), while a
     misestimated axis gives an off-axis rate in proportion to the flexion rate at every angle; so the
     off-axis rate is fitted as ``eps * u + beta_k * flexion * u`` (``u`` the flexion rate, one
     ``beta`` per flexion cycle: a valgus rep steep, a clean rep flat) and the axis is turned by the
     common ``eps`` (:func:`shared_fit`). Likewise for the shank, where the coupled axial rotation
     ("screw home") also grows from zero with flexion.
  4. Signs: the principal axis has none; the shank's is taken to agree with the thigh's (one physical
     axis), and both are flipped if the knee would bend backward.

Streaming: :class:`KneeCalibrator` is fed the aligned samples as they arrive and reports the sample
at which the calibration completed; it never looks ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from analysis.joint_center import (
    G,
    JointCentreSettings,
    angular_acceleration,
    fit_lever_arms,
    heading_phasors,
    joint_centre_force,
    lever_matrix,
)
from analysis.orientation import gravity_in_sensor


@dataclass(frozen=True)
class CalibrationSettings:
    still_gyro_dps: float = 10.0  # both sensors below this angular rate (norm) = standing still (deg/s)
    still_accel_tol_g: float = 0.05  # ... and the accelerometer norm within this of 1 g
    still_min_s: float = 1.0  # the standing pose lasts at least this long (s)
    moving_gyro_dps: float = 30.0  # a sample is movement when either sensor turns faster (deg/s)
    movement_rotation_deg: float = 90.0  # each sensor turns this much in total before the axes are fitted
    movement_flexion_deg: float = 20.0  # ... and the knee has bent through this range (deg)
    max_buffer_s: float = 120.0  # samples kept while waiting for a standing pose and movement (s)
    provisional_still_min_s: float = 0.025  # a still run this long already gives provisional long axes (s)


@dataclass(frozen=True)
class KneeCalibration:
    """``thigh_mounting`` / ``shank_mounting``: sensor -> segment rotations ``M`` (3, 3);
    ``heading_rad``: shank earth frame -> thigh earth frame heading offset at the end of calibration;
    ``lever_*_m``: from each sensor to the knee's joint centre (m, sensor frame)."""

    thigh_mounting: np.ndarray
    shank_mounting: np.ndarray
    heading_rad: float
    heading_information: float = 0.0  # what heading_rad is worth to the streaming estimate (sum of weights)
    lever_thigh_m: np.ndarray = field(default_factory=lambda: np.zeros(3))  # sensor -> joint centre, sensor frame
    lever_shank_m: np.ndarray = field(default_factory=lambda: np.zeros(3))


def segment_inclination_deg(q: np.ndarray, z_sensor: np.ndarray) -> np.ndarray:
    """Sagittal inclination (deg) of a segment whose long axis is ``z_sensor`` (n, 3) in the sensor frame
    (y medio-lateral: the sensor's y made perpendicular to it, as in ``mounting_from_axes``), from the
    sensor's 6D quaternions ``q`` (n, 4); ``sagittal_inclination_deg`` for ``z_sensor`` = sensor z."""
    z = z_sensor / np.linalg.norm(z_sensor, axis=1, keepdims=True)
    y = np.array([0.0, 1.0, 0.0]) - z[:, 1:2] * z
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x = np.cross(y, z)
    up = gravity_in_sensor(q)  # earth up in sensor coordinates; its segment coordinates are M @ up
    return np.degrees(np.arctan2(-np.sum(x * up, axis=1), np.sum(z * up, axis=1)))


def principal_axis(v: np.ndarray) -> np.ndarray:
    """Unit principal axis (3,) of the rows of ``v`` (n, 3): eigenvector of the largest eigenvalue of
    the second-moment matrix (not centred: rotation in both directions counts)."""
    w, vec = np.linalg.eigh(v.T @ v)
    return vec[:, np.argmax(w)]


def mounting_from_axes(z_sensor: np.ndarray, y_sensor: np.ndarray) -> np.ndarray:
    """Sensor -> segment rotation ``M`` (3, 3) whose rows are the segment axes in sensor coordinates:
    ``z`` as given (normalised), ``y`` made perpendicular to it, ``x = y x z``."""
    z = z_sensor / np.linalg.norm(z_sensor)
    y = y_sensor - np.dot(y_sensor, z) * z
    y = y / np.linalg.norm(y)
    return np.stack((np.cross(y, z), y, z))


def rot_z(angle_rad: np.ndarray | float) -> Rotation:
    """Rotations about the vertical by ``angle_rad`` (rad): one for a scalar, n for an array (n,)."""
    a = np.asarray(angle_rad, dtype=float)
    return Rotation.from_rotvec(a[..., None] * np.array([0.0, 0.0, 1.0]))


def quat_wxyz_to_rotation(q: np.ndarray) -> Rotation:
    """scipy Rotation from (w, x, y, z) quaternions (..., 4)."""
    q = np.asarray(q, dtype=float)
    return Rotation.from_quat(q[..., [1, 2, 3, 0]])


def shared_fit(y: np.ndarray, x1: np.ndarray, x2: np.ndarray, segment: np.ndarray) -> tuple[float, float]:
    """Least squares ``y = c * x1 + beta_k * x2`` with one ``c`` for all rows and one ``beta_k`` per segment
    (``segment``: non-negative int labels): ``(numerator, denominator)`` of ``c`` (each segment's ``beta`` eliminated
    by projecting out its ``x2``); ``den`` 0 means no information about ``c``."""
    seg = np.asarray(segment, np.int64)
    s11, s12, s22, s1y, s2y = (np.bincount(seg, weights=v) for v in (x1 * x1, x1 * x2, x2 * x2, x1 * y, x2 * y))
    ok = s22 > 1e-12 * np.maximum(s11, 1e-300)
    q = np.where(ok, s12 / np.where(ok, s22, 1.0), 0.0)
    return float(np.sum(s1y - q * s2y)), float(np.sum(s11 - q * s12))


def flexion_cycles(flexion_deg: np.ndarray, split_deg: float, resume: np.ndarray) -> np.ndarray:
    """Cycle label per sample: a new cycle where the knee straightens past ``split_deg`` or the movement resumes."""
    flexed = np.abs(flexion_deg) >= split_deg
    straightens = np.concatenate(([False], flexed[:-1] & ~flexed[1:]))
    return np.cumsum(straightens | resume)


def _axis_correction(w: np.ndarray, m: np.ndarray, flexion_deg: np.ndarray, cycles: np.ndarray) -> float:
    """Turn (rad, about ``m``'s z toward its x) of the flexion axis ``m[1]`` that the relative angular velocities
    ``w`` (n, 3, this sensor's frame, axial rotation removed) call for (step 3 of the module docstring)."""
    u, v = w @ m[1], w @ m[0]
    num, den = shared_fit(v, u, np.abs(flexion_deg) * u, cycles)
    return num / den if den > 0 else 0.0


def _flexion_deg(rt: Rotation, rs: Rotation, m_t: np.ndarray, m_s: np.ndarray, delta: float) -> np.ndarray:
    """Knee flexion (deg) of the samples with these mountings and heading (sign as it comes)."""
    from analysis.knee_angles import knee_angles_from_segments  # circular at import time otherwise

    return knee_angles_from_segments(rt * Rotation.from_matrix(m_t.T), rot_z(delta) * rs * Rotation.from_matrix(m_s.T),
                                     "left_knee")["flexion_deg"]


def _without_axial(w: np.ndarray, long_axis: np.ndarray) -> np.ndarray:
    """Angular velocities ``w`` (n, 3) without their part along the (n, 3) or (3,) unit ``long_axis``."""
    return w - np.sum(w * long_axis, axis=-1, keepdims=True) * long_axis


def _signed(axis: np.ndarray, like: np.ndarray) -> np.ndarray:
    return axis if np.dot(axis, like) >= 0 else -axis


def joint_centre_heading(q_thigh: np.ndarray, q_shank: np.ndarray, gyro_thigh_dps: np.ndarray,
                         gyro_shank_dps: np.ndarray, accel_thigh_g: np.ndarray, accel_shank_g: np.ndarray,
                         use: np.ndarray, rate_hz: float, settings: JointCentreSettings | None = None,
                         ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Heading offset (rad), its information, and the lever arms (m, sensor frames) from the samples ``use`` (n,)
    bool of evenly sampled rows (see :mod:`analysis.joint_center`). Impacts (either accelerometer beyond 3 g) are
    left out of the lever-arm fit, which is repeated once with residual weights."""
    s = settings or JointCentreSettings()
    t = np.round(np.arange(q_thigh.shape[0]) * 1e9 / rate_hz).astype(np.int64)
    parts = {}
    for name, q, gyr, acc in (("thigh", q_thigh, gyro_thigh_dps, accel_thigh_g),
                              ("shank", q_shank, gyro_shank_dps, accel_shank_g)):
        w = np.deg2rad(gyr)
        w_dot, ok = angular_acceleration(w, t, None, s.max_step_s)
        parts[name] = (quat_wxyz_to_rotation(q[use]).as_matrix(), acc[use] * G, lever_matrix(w[use], w_dot[use]),
                       ok[use] & (np.linalg.norm(acc[use], axis=1) < 3.0))
    (r_t, a_t, g_t, ok_t), (r_s, a_s, g_s, ok_s) = parts["thigh"], parts["shank"]
    weight = (ok_t & ok_s).astype(float)
    for _ in range(2):
        o_t, o_s = fit_lever_arms(r_t, a_t, g_t, r_s, a_s, g_s, weight, s.ridge)
        f_t, f_s = joint_centre_force(r_t, a_t, g_t, o_t), joint_centre_force(r_s, a_s, g_s, o_s)
        weight = (ok_t & ok_s) / (1.0 + ((f_t[:, 2] - f_s[:, 2]) / s.residual_scale_mps2) ** 2)
    total = np.sum(heading_phasors(f_t, f_s, ok_t & ok_s, s))
    return float(np.angle(total)), float(abs(total)), o_t, o_s


def fit_knee_calibration(q_thigh: np.ndarray, q_shank: np.ndarray, gyro_thigh_dps: np.ndarray,
                         gyro_shank_dps: np.ndarray, accel_thigh_g: np.ndarray, accel_shank_g: np.ndarray,
                         stand: slice, moving: np.ndarray, rate_hz: float = 200.0, refine_steps: int = 2,
                         split_flexion_deg: float = 15.0, joint_centre: JointCentreSettings | None = None,
                         ) -> KneeCalibration:
    """Fit both mountings, the heading offset and the lever arms (see the module docstring).

    ``q_*`` (n, 4) 6D orientations (sensor -> own earth frame), ``gyro_*_dps`` (n, 3) and ``accel_*_g``
    (n, 3) sensor frame, evenly sampled at ``rate_hz``; ``stand`` the standing samples, ``moving`` (n,) bool: the
    functional movement.
    """
    z_t, z_s = accel_thigh_g[stand].mean(axis=0), accel_shank_g[stand].mean(axis=0)
    delta, info, o_t, o_s = joint_centre_heading(q_thigh, q_shank, gyro_thigh_dps, gyro_shank_dps, accel_thigh_g,
                                                 accel_shank_g, moving, rate_hz, joint_centre)
    rt, rs = quat_wxyz_to_rotation(q_thigh[moving]), quat_wxyz_to_rotation(q_shank[moving])
    gt, gs = np.deg2rad(gyro_thigh_dps[moving]), np.deg2rad(gyro_shank_dps[moving])
    rel = rt.inv() * rot_z(delta) * rs  # shank sensor -> thigh sensor
    # Relative angular velocity in each sensor's frame, the tibia's axial rotation removed.
    w_t = _without_axial(rel.apply(gs) - gt, rel.apply(z_s / np.linalg.norm(z_s)))
    w_s = _without_axial(gs - rel.inv().apply(gt), z_s / np.linalg.norm(z_s))
    y_t = principal_axis(w_t)
    y_s = _signed(principal_axis(w_s), rel.inv().apply(y_t).mean(axis=0))  # one physical axis
    m_t, m_s = mounting_from_axes(z_t, y_t), mounting_from_axes(z_s, y_s)
    idx = np.flatnonzero(moving)
    resume = np.concatenate(([True], np.diff(idx) > 1))
    for _ in range(refine_steps):
        flex = _flexion_deg(rt, rs, m_t, m_s, delta)
        cycles = flexion_cycles(flex, split_flexion_deg, resume)
        eps_t, eps_s = _axis_correction(w_t, m_t, flex, cycles), _axis_correction(w_s, m_s, flex, cycles)
        m_t = mounting_from_axes(z_t, m_t[1] + eps_t * m_t[0])
        m_s = mounting_from_axes(z_s, m_s[1] + eps_s * m_s[0])
    if np.mean(_flexion_deg(rt, rs, m_t, m_s, delta)) < 0:  # both axes upside down: a knee bends forward, flip both
        flip = np.diag([-1.0, -1.0, 1.0])
        m_t, m_s = flip @ m_t, flip @ m_s
    return KneeCalibration(m_t, m_s, delta, info, o_t, o_s)


class KneeCalibrator:
    """Streaming: feed aligned thigh/shank samples; ``feed`` returns the index within the chunk at which
    the calibration completed (``self.result`` is then set), else None. Samples up to that index were
    used; later samples are not."""

    def __init__(self, rate_hz: float, settings: CalibrationSettings | None = None,
                 joint_centre: JointCentreSettings | None = None) -> None:
        self.settings = settings or CalibrationSettings()
        self.joint_centre = joint_centre
        self.rate_hz = rate_hz
        self.result: KneeCalibration | None = None
        self._buf: list[np.ndarray] = []  # rows: q_t(4) q_s(4) acc_t(3) acc_s(3) gyro_t(3) gyro_s(3)
        self._n = 0
        self._stand: tuple[int, int] | None = None  # absolute sample range of the standing pose
        self._still_run = 0  # consecutive still samples so far
        self._turned = np.zeros(2)  # deg turned by each sensor during movement after the standing pose
        self._flex_range = (np.inf, -np.inf)  # provisional flexion range since the standing pose (deg)
        self._offset = 0  # absolute index of the first buffered row
        # Once the standing pose is found: each segment's long axis in its sensor frame (thigh, shank).
        self.stand_axes: tuple[np.ndarray, np.ndarray] | None = None
        # Before it is found: per row of the last chunk fed, the mean accelerometer (thigh, shank: (n, 6), g)
        # of the latest still run of at least provisional_still_min_s up to that row (NaN: none yet). The
        # session starts standing, so this is the long axes' best estimate while the pose is still being
        # timed, instead of taking the sensors as ideally mounted for that first second.
        self.still_axes_rows: np.ndarray | None = None
        self._run_sum = np.zeros(6)  # accelerometer sum of the still run in progress at the chunk's end
        self._last_still_mean = np.full(6, np.nan)

    @property
    def stand_end(self) -> int | None:
        """Absolute index (samples fed so far count from 0) after the standing pose, once found."""
        return None if self._stand is None else self._stand[1]

    def feed(self, rows: np.ndarray) -> int | None:
        """``rows`` (n, 20): q_thigh, q_shank (w, x, y, z), accel thigh, shank (g), gyro thigh, shank (deg/s)."""
        if self.result is not None or rows.shape[0] == 0:
            return None
        s = self.settings
        n = rows.shape[0]
        g_t, g_s = np.linalg.norm(rows[:, 14:17], axis=1), np.linalg.norm(rows[:, 17:20], axis=1)
        a_t, a_s = np.linalg.norm(rows[:, 8:11], axis=1), np.linalg.norm(rows[:, 11:14], axis=1)
        still = ((g_t < s.still_gyro_dps) & (g_s < s.still_gyro_dps)
                 & (np.abs(a_t - 1) < s.still_accel_tol_g) & (np.abs(a_s - 1) < s.still_accel_tol_g))
        need = int(round(s.still_min_s * self.rate_hz))
        done_at = None
        start = 0
        if self._stand is None:
            # Run length of still samples ending at each row, continuing the previous chunk's run.
            idx = np.arange(n)
            last_break = np.maximum.accumulate(np.where(~still, idx, -1))
            run = np.where(last_break >= 0, idx - last_break, idx + 1 + self._still_run)
            run = np.where(still, run, 0)
            hit = np.flatnonzero(run >= need)
            self._provisional_axes(rows, still, run, last_break)
            self._still_run = int(run[-1])
            if hit.size:
                end = self._n + int(hit[0]) + 1
                self._stand = (end - need, end)
                start = int(hit[0]) + 1
        self._buf.append(rows)
        self._n += n
        if self._stand is not None and self.stand_axes is None:
            data = np.concatenate(self._buf)
            a, b = self._stand[0] - self._offset, self._stand[1] - self._offset
            self.stand_axes = (data[a:b, 8:11].mean(axis=0), data[a:b, 11:14].mean(axis=0))
        if self._stand is not None and self.stand_axes is not None and start < n:
            moving = np.maximum(g_t, g_s)[start:] > s.moving_gyro_dps
            turned = np.cumsum(np.column_stack((g_t, g_s))[start:] * moving[:, None], axis=0) / self.rate_hz
            total = self._turned + turned
            # The knee itself must have bent, not only the leg swung: range of the provisional flexion (the
            # segments' sagittal inclinations with the standing long axes) since the standing pose.
            z_t, z_s = self.stand_axes
            flex = (segment_inclination_deg(rows[start:, 4:8], np.broadcast_to(z_s, (n - start, 3)))
                    - segment_inclination_deg(rows[start:, 0:4], np.broadcast_to(z_t, (n - start, 3))))
            hi = np.maximum.accumulate(np.concatenate(([self._flex_range[1]], flex)))[1:]
            lo = np.minimum.accumulate(np.concatenate(([self._flex_range[0]], flex)))[1:]
            ok = np.flatnonzero((total >= s.movement_rotation_deg).all(axis=1) & (hi - lo >= s.movement_flexion_deg))
            if ok.size:
                done_at = start + int(ok[0]) + 1
                self._buf[-1] = rows[:done_at]
            self._turned = total[-1] if done_at is None else total[ok[0]]
            self._flex_range = (float(lo[-1]), float(hi[-1]))
        if done_at is not None:
            self._finish()
        else:
            self._trim()
        return done_at

    def _provisional_axes(self, rows: np.ndarray, still: np.ndarray, run: np.ndarray, last_break: np.ndarray,
                          ) -> None:
        """Set ``still_axes_rows`` for this chunk (vectorised running means of the still runs)."""
        acc = np.column_stack((rows[:, 8:11], rows[:, 11:14])) * still[:, None]
        cs = np.cumsum(acc, axis=0)
        before = np.where(last_break[:, None] >= 0, cs[np.maximum(last_break, 0)], -self._run_sum)
        run_sum = cs - before  # sum over the still run ending at each row (0 where not still)
        ok = run >= max(int(round(self.settings.provisional_still_min_s * self.rate_hz)), 1)
        mean = np.where(ok[:, None], run_sum / np.maximum(run, 1)[:, None], np.nan)
        last = np.maximum.accumulate(np.where(ok, np.arange(ok.size), -1))
        self.still_axes_rows = np.where(last[:, None] >= 0, mean[np.maximum(last, 0)], self._last_still_mean)
        self._run_sum = run_sum[-1] if still[-1] else np.zeros(6)
        self._last_still_mean = self.still_axes_rows[-1]

    def _trim(self) -> None:
        keep = int(self.settings.max_buffer_s * self.rate_hz)
        total = sum(b.shape[0] for b in self._buf)
        if total > 2 * keep and self._stand is None:
            data = np.concatenate(self._buf)[-keep:]
            self._offset += total - data.shape[0]
            self._buf = [data]

    def _finish(self) -> None:
        data = np.concatenate(self._buf)
        self._buf = []
        assert self._stand is not None
        a, b = self._stand[0] - self._offset, self._stand[1] - self._offset
        s = self.settings
        after = np.zeros(data.shape[0], bool)
        after[b:] = True
        moving = after & (np.maximum(np.linalg.norm(data[:, 14:17], axis=1),
                                     np.linalg.norm(data[:, 17:20], axis=1)) > s.moving_gyro_dps)
        self.result = fit_knee_calibration(data[:, 0:4], data[:, 4:8], data[:, 14:17], data[:, 17:20],
                                           data[:, 8:11], data[:, 11:14], slice(a, b), moving,
                                           rate_hz=self.rate_hz, joint_centre=self.joint_centre)
