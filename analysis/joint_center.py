"""Relative heading of a joint's two 6D orientations from the acceleration of the joint centre, streaming.

Without a magnetometer each sensor's orientation has its own heading (rotation about the vertical); the
offset ``delta`` between the two earth frames (``Rz(delta)``: shank earth frame -> thigh earth frame) must
come from the joint. The knee's joint centre is one point of both segments, so its acceleration measured
through either sensor is one vector (Seel, Raisch & Schauer 2014, "IMU-based joint angle measurement for gait
analysis", joint position from accelerations; Weygers et al. 2020, "Drift-free inertial sensor-based joint
kinematics for long-term arbitrary movements", heading from this constraint)::

    R_k (a_k + Gamma_k o_k),   Gamma_k o = w_k' x o + w_k x (w_k x o)

is the specific force at the joint centre in sensor ``k``'s earth frame (``a_k`` its accelerometer, ``w_k``
its gyroscope, ``o_k`` the constant lever arm from the sensor to the joint centre in the sensor frame).

* Its vertical component does not depend on the heading: equating it for the two sensors is linear in the
  six lever-arm coordinates, so they follow by least squares over the calibration movement
  (:func:`fit_lever_arms`; the part along a pure hinge axis, which no rotation about it can reveal, is kept
  small by a light ridge).
* Its horizontal components then give the heading: ``delta`` is the angle from the shank's to the thigh's
  horizontal joint-centre acceleration, averaged over the movement as weighted unit phasors
  (:class:`JointCentreHeading`).

Why not the 2-DoF joint constraint (the thigh's flexion axis perpendicular to the shank's long axis, Laidig
et al. 2017), as before: that product is minus the sine of the knee's abduction, so a heading fitted to it
is the heading that makes the abduction zero, and every valgus that recurs with flexion (physiological, or
the episodes themselves) was cancelled and read as varus on the next reps (-4 to -8 deg at deep flexion on
the standard set: 10 deg valgus episodes went unseen). The joint centre makes no assumption on the angles.

Weights: the horizontal joint-centre accelerations are a few m/s^2 at most in squats, lunges and strides;
landing impacts (tens of g, the accelerometer saturated) and the soft-tissue shock of a footstrike break the
rigid-body model, so each sample's weight is capped (``accel_cap_mps2`` per sensor) and falls with the
mismatch of the two vertical components, the model's own residual (``residual_scale_mps2``).

Streaming: a weighted exponential average of phasors (``scipy.signal.lfilter`` with its state carried), the
angular acceleration by backward differences with the previous sample carried, so the result does not depend
on how the data are cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.spatial.transform import Rotation

G = 9.80665  # m/s^2 per g


@dataclass(frozen=True)
class JointCentreSettings:
    time_constant_s: float = 10.0  # memory of the heading estimate (s); the gyro bias is measured while standing
    accel_cap_mps2: float = 3.0  # a sensor's horizontal joint-centre acceleration counts up to this (m/s^2)
    residual_scale_mps2: float = 0.5  # vertical mismatch at which a sample's weight halves (m/s^2)
    max_step_s: float = 0.02  # a sample further than this from the previous has no angular acceleration: weight 0
    ridge: float = 1e-3  # lever-arm ridge, relative to the mean diagonal of the normal equations
    gap_keep: float = 0.05  # after a long gap in either sensor, the earlier information counts this much
    settle_share: float = 0.25  # ... and the heading is unknown until this share of the starting information is back


def lever_matrix(w: np.ndarray, w_dot: np.ndarray) -> np.ndarray:
    """``Gamma`` (n, 3, 3) with ``Gamma @ o = w_dot x o + w x (w x o)`` for angular rates ``w`` (rad/s) and
    accelerations ``w_dot`` (rad/s^2), (n, 3)."""
    def skew(v: np.ndarray) -> np.ndarray:
        z = np.zeros(v.shape[0])
        return np.stack((np.stack((z, -v[:, 2], v[:, 1]), -1), np.stack((v[:, 2], z, -v[:, 0]), -1),
                         np.stack((-v[:, 1], v[:, 0], z), -1)), 1)

    ws = skew(w)
    return skew(w_dot) + ws @ ws


def angular_acceleration(gyro_rad_s: np.ndarray, t_ns: np.ndarray, prev: tuple[np.ndarray, int] | None,
                         max_step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Backward-difference angular acceleration (rad/s^2, (n, 3)) and whether each is valid (n,) (a step of at
    most ``max_step_s`` from the previous sample; ``prev`` = (rate, time ns) of the sample before the first)."""
    w = np.asarray(gyro_rad_s, float)
    t = np.asarray(t_ns, np.int64)
    if prev is None:
        w0, t0 = w[:1], t[:1] - 1
    else:
        w0, t0 = prev[0][None, :], np.array([prev[1]], np.int64)
    w_all, t_all = np.concatenate((w0, w)), np.concatenate((t0, t))
    dt = np.diff(t_all).astype(float) / 1e9
    ok = (dt > 0) & (dt <= max_step_s)
    if prev is None:
        ok[0] = False
    w_dot = np.diff(w_all, axis=0) / np.where(ok, dt, 1.0)[:, None]
    return np.where(ok[:, None], w_dot, 0.0), ok


def joint_centre_force(r_earth: np.ndarray, accel_mps2: np.ndarray, gamma: np.ndarray, lever_m: np.ndarray,
                       ) -> np.ndarray:
    """Specific force (m/s^2, (n, 3)) at the joint centre in the sensor's earth frame: ``R (a + Gamma o)``,
    ``r_earth`` (n, 3, 3) sensor -> earth."""
    return np.einsum("nij,nj->ni", r_earth, accel_mps2 + gamma @ lever_m)


def lever_acceleration(w: np.ndarray, w_dot: np.ndarray, lever_m: np.ndarray) -> np.ndarray:
    """``Gamma @ o`` (m/s^2, (n, 3)) without forming ``Gamma``: ``w_dot x o + w x (w x o)``
    (``w x (w x o) = w (w . o) - o |w|^2``; written out: ``np.cross`` costs more than the work on 10-row chunks)."""
    o = np.asarray(lever_m, float)
    wd_x_o = np.column_stack((w_dot[:, 1] * o[2] - w_dot[:, 2] * o[1], w_dot[:, 2] * o[0] - w_dot[:, 0] * o[2],
                              w_dot[:, 0] * o[1] - w_dot[:, 1] * o[0]))
    return wd_x_o + w * (w @ o)[:, None] - o * np.einsum("ij,ij->i", w, w)[:, None]


def fit_lever_arms(r_t: np.ndarray, a_t: np.ndarray, gamma_t: np.ndarray, r_s: np.ndarray, a_s: np.ndarray,
                   gamma_s: np.ndarray, weight: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Lever arms (m, sensor frames) from each sensor to the joint centre, from the vertical components of the
    joint-centre specific force being equal (linear least squares, a ``ridge`` relative to the normal matrix's
    mean diagonal). ``r_*`` (n, 3, 3) sensor -> earth, ``a_*`` (n, 3) m/s^2, ``gamma_*`` (n, 3, 3), ``weight`` (n,)."""
    x = np.hstack((np.einsum("ni,nij->nj", r_t[:, 2, :], gamma_t), -np.einsum("ni,nij->nj", r_s[:, 2, :], gamma_s)))
    y = np.einsum("ni,ni->n", r_s[:, 2, :], a_s) - np.einsum("ni,ni->n", r_t[:, 2, :], a_t)
    xtx = x.T @ (x * weight[:, None])
    lam = ridge * np.trace(xtx) / 6.0 + 1e-12
    o = np.linalg.solve(xtx + lam * np.eye(6), x.T @ (weight * y))
    return o[:3], o[3:]


def heading_phasors(f_t: np.ndarray, f_s: np.ndarray, valid: np.ndarray, settings: JointCentreSettings,
                    ) -> np.ndarray:
    """Weighted unit phasors ``w exp(i delta_k)`` (n,) of the heading that turns the shank's horizontal
    joint-centre force ``f_s`` onto the thigh's ``f_t`` (both (n, 3), m/s^2, own earth frames)."""
    ct, cs = f_t[:, 0] + 1j * f_t[:, 1], f_s[:, 0] + 1j * f_s[:, 1]
    prod = ct * np.conj(cs)
    mag = np.abs(prod)
    cap = settings.accel_cap_mps2
    w = np.minimum(np.abs(ct), cap) * np.minimum(np.abs(cs), cap)
    w = w / (1.0 + ((f_t[:, 2] - f_s[:, 2]) / settings.residual_scale_mps2) ** 2)
    w = np.where(valid & (mag > 1e-12) & np.isfinite(mag), w, 0.0)
    return w * np.where(mag > 1e-12, prod / np.where(mag > 1e-12, mag, 1.0), 0.0)


class JointCentreHeading:
    """Streaming heading offset ``delta`` (rad) of the shank's earth frame to the thigh's, from the joint centre.

    ``update(t_ns, r_t, acc_t_g, gyro_t_dps, r_s, acc_s_g, gyro_s_dps)`` takes aligned samples of both sensors
    (``r_*`` sensor -> own earth rotations (n,), accelerometer in g, gyroscope in deg/s, sensor
    frames) and returns ``delta`` per sample (n,), each from the samples up to it, and whether it is settled
    (n,) bool. ``information`` is what the starting value ``delta0_rad`` is worth (the calibration's sum of
    weights).

    After a long gap (:meth:`forget`) a sensor's heading is whatever its filter held through the gap while the
    segment turned, so ``delta`` may be off by many degrees; it re-converges on the next movement, in jumps a
    joint-angle stage must not pass on (a jump in rotation looks like giving way). It is *unsettled* until
    ``settle_share`` of the starting information has come in since the gap.
    """

    def __init__(self, rate_hz: float, delta0_rad: float, lever_thigh_m: np.ndarray, lever_shank_m: np.ndarray,
                 information: float = 0.0, settings: JointCentreSettings | None = None) -> None:
        self.settings = s = settings or JointCentreSettings()
        self.lever_thigh_m, self.lever_shank_m = np.asarray(lever_thigh_m, float), np.asarray(lever_shank_m, float)
        self._alpha = float(np.exp(-1.0 / (rate_hz * s.time_constant_s)))
        self._state = np.array([max(information, 1e-9) * np.exp(1j * delta0_rad)])  # lfilter zi
        self._prev: dict[str, tuple[np.ndarray, int] | None] = {"thigh": None, "shank": None}
        self._settle_need = s.settle_share * information
        self._since_gap = np.inf  # information since the last gap (no gap yet: settled)

    @property
    def delta_rad(self) -> float:
        return float(np.angle(self._state[0]))

    def forget(self) -> None:
        """A long gap: the heading after it may differ, so what came before counts only ``gap_keep``; the angular
        acceleration restarts."""
        self._state = self._state * self.settings.gap_keep
        self._prev = {"thigh": None, "shank": None}
        self._since_gap = 0.0

    def update(self, t_ns: np.ndarray, r_t: Rotation, acc_t_g: np.ndarray, gyro_t_dps: np.ndarray,
               r_s: Rotation, acc_s_g: np.ndarray, gyro_s_dps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t_ns, np.int64)
        if t.size == 0:
            return np.empty(0), np.empty(0, bool)
        forces, valid = [], np.ones(t.size, bool)
        for name, r, acc, gyr, lever in (("thigh", r_t, acc_t_g, gyro_t_dps, self.lever_thigh_m),
                                         ("shank", r_s, acc_s_g, gyro_s_dps, self.lever_shank_m)):
            w = np.deg2rad(np.asarray(gyr, float))
            w_dot, ok = angular_acceleration(w, t, self._prev[name], self.settings.max_step_s)
            self._prev[name] = (w[-1].copy(), int(t[-1]))
            valid &= ok
            forces.append(r.apply(np.asarray(acc, float) * G + lever_acceleration(w, w_dot, lever)))
        x = heading_phasors(forces[0], forces[1], valid, self.settings)
        y, self._state = lfilter([1.0], [1.0, -self._alpha], x, zi=self._state)
        if abs(self._state[0]) < 1e-200:  # after hours without information: keep the angle alive
            self._state = 1e-200 * self._state / max(abs(self._state[0]), 1e-300)
        since = self._since_gap + np.cumsum(np.abs(x))
        self._since_gap = float(since[-1])
        return np.angle(y), since >= self._settle_need
