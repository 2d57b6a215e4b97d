"""Sensor-to-segment calibration of a knee's two sensors from standing still plus a functional movement.

Segment frames (as in the simulator's body model): standing upright every segment frame is the
world frame, x anterior, y left, z up along the segment. A sensor's frame is its segment frame
rotated by the mounting ``M`` (sensor -> segment): ``R_sensor = R_segment @ M``, so
``R_segment = R_sensor @ M.T`` and the rows of ``M`` are the segment's x, y, z axes in sensor
coordinates.

* Standing still (>= ``still_min_s``, every session starts so): the mean accelerometer is the
  segment's long axis ``z`` in sensor coordinates (the segment is upright).
* Functional movement (the first squats, lunges, swings or strides, until each sensor has turned
  ``movement_rotation_deg``): the knee's flexion axis in each sensor frame is the principal axis
  of that sensor's angular velocity (Seel et al. 2012 identify the hinge axis from gyroscopes;
  with sagittal-plane exercises the PCA of each segment's rate is that axis, without their
  iterative solver). It is made perpendicular to ``z`` (Gram-Schmidt), which also removes the part
  of the tibia's coupled axial rotation that tilts the axis toward the long axis.
* Signs: the PCA axis has no sign. Of the four sign choices, the heading offset of the two 6D
  frames (:mod:`analysis.hinge_heading`) is fitted to the movement for each; pairs that differ by
  a 180 deg turn of both frames about z mirror flexion, so of each pair the one with positive mean
  flexion is kept (a knee bends forward), and of the two left the one whose abduction stays
  smaller, i.e. the more joint-like.

Streaming: :class:`KneeCalibrator` is fed the aligned samples as they arrive and reports the sample
at which the calibration completed; it never looks ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from analysis.hinge_heading import heading_candidates, nearest


@dataclass(frozen=True)
class CalibrationSettings:
    still_gyro_dps: float = 10.0  # both sensors below this angular rate (norm) = standing still (deg/s)
    still_accel_tol_g: float = 0.05  # ... and the accelerometer norm within this of 1 g
    still_min_s: float = 1.0  # the standing pose lasts at least this long (s)
    moving_gyro_dps: float = 30.0  # a sample is movement when either sensor turns faster (deg/s)
    movement_rotation_deg: float = 120.0  # each sensor turns this much in total before the axes are fitted
    max_buffer_s: float = 120.0  # samples kept while waiting for a standing pose and movement (s)
    provisional_still_min_s: float = 0.025  # a still run this long already gives provisional long axes (s)


@dataclass(frozen=True)
class KneeCalibration:
    """``thigh_mounting`` / ``shank_mounting``: sensor -> segment rotations ``M`` (3, 3);
    ``heading_rad``: shank earth frame -> thigh earth frame heading offset at the end of calibration."""

    thigh_mounting: np.ndarray
    shank_mounting: np.ndarray
    heading_rad: float


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


def heading_rad_of(v: np.ndarray) -> np.ndarray:
    return np.arctan2(v[..., 1], v[..., 0])


def rot_z(angle_rad: np.ndarray | float) -> Rotation:
    """Rotations about the vertical by ``angle_rad`` (rad): one for a scalar, n for an array (n,)."""
    a = np.asarray(angle_rad, dtype=float)
    return Rotation.from_rotvec(a[..., None] * np.array([0.0, 0.0, 1.0]))


def quat_wxyz_to_rotation(q: np.ndarray) -> Rotation:
    """scipy Rotation from (w, x, y, z) quaternions (..., 4)."""
    q = np.asarray(q, dtype=float)
    return Rotation.from_quat(q[..., [1, 2, 3, 0]])


def _fit_heading(rt: Rotation, rs: Rotation, m_t: np.ndarray, m_s: np.ndarray, ref: float) -> float:
    """Weighted circular mean (rad) of the per-sample 2-DoF heading solutions nearest ``ref``."""
    ca, cb, w = heading_candidates(rt.apply(m_t[1]), rs.apply(m_s[2]))
    return float(np.angle(np.sum(w * np.exp(1j * nearest(ca, cb, ref))))) if w.sum() > 0 else ref


def _relative_axis(w_rel: np.ndarray, long_axis: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Flexion axis from relative angular velocities ``w_rel`` (n, 3) with the axial-rotation part (along
    the shank's long axis ``long_axis``, (n, 3)) removed; sign as ``previous``."""
    w = w_rel - np.sum(w_rel * long_axis, axis=1, keepdims=True) * long_axis
    axis = principal_axis(w)
    return axis if np.dot(axis, previous) >= 0 else -axis


def fit_knee_calibration(q_thigh: np.ndarray, q_shank: np.ndarray, gyro_thigh_dps: np.ndarray,
                         gyro_shank_dps: np.ndarray, accel_thigh_g: np.ndarray, accel_shank_g: np.ndarray,
                         stand: slice, moving: np.ndarray, refine_steps: int = 2) -> KneeCalibration:
    """Fit both mountings and the heading offset (see the module docstring).

    ``q_*`` (n, 4) 6D orientations (sensor -> own earth frame), ``gyro_*_dps`` (n, 3) and ``accel_*_g``
    (n, 3) sensor frame, ``stand`` the standing samples, ``moving`` (n,) bool: the functional movement.

    Which way the shank's axis points relative to the thigh's cannot be told from the joint constraint
    (a shank leaning back satisfies it as well as one leaning forward); both sensors sit a hand's width
    from the knee, so their horizontal accelerations in a common earth frame must agree in direction:
    the pairing with positive correlation is kept. Then the axes are refined from the *relative*
    angular velocity with the tibia's axial rotation removed (2-DoF joint: flexion + axial rotation).
    """
    from analysis.knee_angles import knee_angles_from_segments  # circular at import time otherwise

    z_t, z_s = accel_thigh_g[stand].mean(axis=0), accel_shank_g[stand].mean(axis=0)
    y_t, y_s = principal_axis(gyro_thigh_dps[moving]), principal_axis(gyro_shank_dps[moving])
    rt, rs = quat_wxyz_to_rotation(q_thigh[moving]), quat_wxyz_to_rotation(q_shank[moving])
    mid = (stand.start + stand.stop) // 2
    rt0, rs0 = quat_wxyz_to_rotation(q_thigh[mid]), quat_wxyz_to_rotation(q_shank[mid])
    acc_t = rt.apply(accel_thigh_g[moving])[:, :2]
    acc_s = rs.apply(accel_shank_g[moving])[:, :2]

    def assemble(yt: np.ndarray, ys: np.ndarray, ref: float | None) -> tuple[np.ndarray, np.ndarray, float]:
        m_t, m_s = mounting_from_axes(z_t, yt), mounting_from_axes(z_s, ys)
        if ref is None:  # standing, the two segment frames coincide: their x axes have one heading
            ref = float(heading_rad_of(rt0.apply(m_t[0])) - heading_rad_of(rs0.apply(m_s[0])))
        return m_t, m_s, _fit_heading(rt, rs, m_t, m_s, ref)

    def horizontal_agreement(delta: float) -> float:
        c, s = np.cos(delta), np.sin(delta)
        turned = np.column_stack((c * acc_s[:, 0] - s * acc_s[:, 1], s * acc_s[:, 0] + c * acc_s[:, 1]))
        return float(np.sum(acc_t * turned))

    m_t, m_s, delta = max((assemble(y_t, sgn * y_s, None) for sgn in (1.0, -1.0)),
                          key=lambda o: horizontal_agreement(o[2]))
    y_s = m_s[1]
    gt, gs = np.deg2rad(gyro_thigh_dps[moving]), np.deg2rad(gyro_shank_dps[moving])
    for _ in range(refine_steps):
        rel = rt.inv() * rot_z(delta) * rs  # shank sensor -> thigh sensor
        long_in_thigh = rel.apply(m_s[2])
        y_t = _relative_axis(rel.apply(gs) - gt, long_in_thigh, m_t[1])
        y_s = _relative_axis(gs - rel.inv().apply(gt), np.broadcast_to(m_s[2], gs.shape), m_s[1])
        m_t, m_s, delta = assemble(y_t, y_s, delta)
    ang = knee_angles_from_segments(rt * Rotation.from_matrix(m_t.T),
                                    rot_z(delta) * rs * Rotation.from_matrix(m_s.T), "left_knee")
    if np.mean(ang["flexion_deg"]) < 0:  # both axes upside down: a knee bends forward, flip both
        flip = np.diag([-1.0, -1.0, 1.0])
        m_t, m_s = flip @ m_t, flip @ m_s
    return KneeCalibration(m_t, m_s, delta)


class KneeCalibrator:
    """Streaming: feed aligned thigh/shank samples; ``feed`` returns the index within the chunk at which
    the calibration completed (``self.result`` is then set), else None. Samples up to that index were
    used; later samples are not."""

    def __init__(self, rate_hz: float, settings: CalibrationSettings | None = None) -> None:
        self.settings = settings or CalibrationSettings()
        self.rate_hz = rate_hz
        self.result: KneeCalibration | None = None
        self._buf: list[np.ndarray] = []  # rows: q_t(4) q_s(4) acc_t(3) acc_s(3) gyro_t(3) gyro_s(3)
        self._n = 0
        self._stand: tuple[int, int] | None = None  # absolute sample range of the standing pose
        self._still_run = 0  # consecutive still samples so far
        self._turned = np.zeros(2)  # deg turned by each sensor during movement after the standing pose
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
        if self._stand is not None and start < n:
            moving = np.maximum(g_t, g_s)[start:] > s.moving_gyro_dps
            turned = np.cumsum(np.column_stack((g_t, g_s))[start:] * moving[:, None], axis=0) / self.rate_hz
            total = self._turned + turned
            ok = np.flatnonzero((total >= s.movement_rotation_deg).all(axis=1))
            if ok.size:
                done_at = start + int(ok[0]) + 1
            self._turned = total[-1] if done_at is None else total[ok[0]]
        self._buf.append(rows if done_at is None else rows[:done_at])
        self._n += n
        if self._stand is not None and self.stand_axes is None:
            data = np.concatenate(self._buf)
            a, b = self._stand[0] - self._offset, self._stand[1] - self._offset
            self.stand_axes = (data[a:b, 8:11].mean(axis=0), data[a:b, 11:14].mean(axis=0))
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
                                           data[:, 8:11], data[:, 11:14], slice(a, b), moving)
