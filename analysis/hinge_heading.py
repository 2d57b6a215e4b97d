"""Relative heading of two 6D orientations from the knee's kinematic constraint, streaming.

Without a magnetometer each sensor's orientation has its own, drifting heading (rotation about the
vertical). After Laidig et al. 2017 ("Exploiting kinematic constraints to compensate
magnetometer disturbances", and the 2-DoF joint version, CDC 2017), the offset ``delta`` between
the two earth frames is found from the joint: the knee is modelled as a 2-DoF joint, flexion about
the thigh's medio-lateral axis ``y_thigh`` and axial rotation about the shank's long axis
``z_shank``, so the two axes stay perpendicular (abduction ~ 0). With ``a = y_thigh`` in the
thigh's earth frame and ``b = z_shank`` in the shank's, ``delta`` solves
``a . Rz(delta) b = 0``; of its two solutions the one nearest the current estimate is taken.
Each sample's solution is weighted by its information, ``(|a_h| |b_h| sin)^2`` (h: horizontal
parts; no information while the shank stands vertical, when the heading does not change the
flexion or abduction either), and smoothed by a weighted exponential average of unit phasors with
time constant ``time_constant_s``: long against a rep, so a valgus episode barely moves it, short
against the heading drift of a residual gyro bias.

Why the 2-DoF and not the hinge (1-DoF) constraint: the tibia rotates internally with flexion
("screw home", ~0.05-0.1 deg per deg of flexion), which turns the shank's flexion axis about its
long axis by up to 10 deg; a hinge constraint would read that as heading. Axial rotation is free
in the 2-DoF model.

Hand-written (no library does this): a vectorised ``scipy.signal.lfilter`` per block of
``block_s``; the reference for picking the solution is updated only at block boundaries counted in
samples since the start, so the result does not depend on how the data are cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter


@dataclass(frozen=True)
class HeadingSettings:
    time_constant_s: float = 6.0  # smoothing of the per-sample heading solutions (s)
    block_s: float = 0.1  # the solution-picking reference is updated at this period (s)
    prior_weight_s: float = 1.0  # the calibration's heading counts as this many seconds of full information


def heading_candidates(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both solutions (rad) of ``a . Rz(delta) b = 0`` per row of ``a``, ``b`` (n, 3), and each row's weight.

    Rows without a solution (the axes cannot be made perpendicular) get weight 0.
    """
    ah, bh = np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1])
    phi = np.arctan2(a[:, 1], a[:, 0]) - np.arctan2(b[:, 1], b[:, 0])
    denom = ah * bh
    c = -a[:, 2] * b[:, 2] / np.where(denom > 1e-9, denom, 1.0)
    ok = (denom > 1e-9) & (np.abs(c) < 1.0)
    c = np.clip(c, -1.0, 1.0)
    ac = np.arccos(c)
    weight = np.where(ok, (denom * np.sin(ac)) ** 2, 0.0)
    return phi - ac, phi + ac, weight


def nearest(candidates_a: np.ndarray, candidates_b: np.ndarray, ref: float) -> np.ndarray:
    """Per row the candidate angle (rad) closer to ``ref`` (on the circle)."""
    da = np.abs(np.angle(np.exp(1j * (candidates_a - ref))))
    db = np.abs(np.angle(np.exp(1j * (candidates_b - ref))))
    return np.where(da <= db, candidates_a, candidates_b)


class RelativeHeading:
    """Streaming heading offset ``delta`` (rad): shank earth frame -> thigh earth frame is ``Rz(delta)``.

    ``update(a, b)`` takes the thigh's flexion axis in the thigh's earth frame and the shank's long
    axis in the shank's earth frame (unit vectors, (n, 3)) and returns ``delta`` per sample (n,).
    """

    def __init__(self, rate_hz: float, delta0_rad: float, settings: HeadingSettings | None = None) -> None:
        self.settings = s = settings or HeadingSettings()
        self._alpha = float(np.exp(-1.0 / (rate_hz * s.time_constant_s)))
        self._block = max(int(round(s.block_s * rate_hz)), 1)
        self._state = np.array([s.prior_weight_s * rate_hz * np.exp(1j * delta0_rad)])  # lfilter zi
        self._ref = float(delta0_rad)
        self._n = 0  # samples seen

    @property
    def delta_rad(self) -> float:
        return self._ref

    def update(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cand_a, cand_b, w = heading_candidates(np.asarray(a, float), np.asarray(b, float))
        out = np.empty(w.size)
        start = 0
        while start < w.size:  # one pass per block boundary (10 per second), not per sample
            end = min(w.size, start + self._block - (self._n % self._block))
            sel = nearest(cand_a[start:end], cand_b[start:end], self._ref)
            y, self._state = lfilter([1.0], [1.0, -self._alpha], w[start:end] * np.exp(1j * sel), zi=self._state)
            out[start:end] = np.angle(y) if y.size else []
            self._n += end - start
            if self._n % self._block == 0:
                if abs(self._state[0]) < 1e-200:  # after hours without information: keep the angle alive
                    self._state = 1e-200 * self._state / max(abs(self._state[0]), 1e-300)
                self._ref = float(np.angle(self._state[0])) if abs(self._state[0]) > 0 else self._ref
            start = end
        return out
