"""Per-sensor orientation from accelerometer + gyroscope (6D, no magnetometer), streaming.

Why VQF (Laidig & Seel 2023): it is the most accurate of the open 6D filters on the BROAD
benchmark, has a maintained C++ core with Python bindings, and its batch update carries its
state, so feeding 50 ms frames gives exactly what feeding the whole recording gives. No
magnetometer: steel gym equipment ruins it.

On top of VQF (default parameters, none tuned) the stage can compensate the sensor's latency
(``gyro_delay_s``): a MEMS gyroscope reports the rate of a few milliseconds ago (the group delay
of its internal digital low-pass filter), so the integrated orientation lags the true one by
about ``omega * (delay - T/2)`` (T = sample period; see ``SegmentOrientation``), 1-2.5 deg during a
500-1000 deg/s swing with BROAD's sensor, and part of that lag is an inclination error. The stage
predicts each output sample forward by the latency with the current gyro rate (a constant-rate
extrapolation; causal, no look-ahead, no extra state). On BROAD (``bench/orientation_broad.py``)
this takes the mean inclination RMSE over the ten trials from 0.88 deg to 0.68 deg. See
``bench/README.md`` for how the delay was measured.

Frames and units throughout: quaternions are (w, x, y, z), Hamilton convention, rotating sensor
coordinates into earth coordinates (earth z up, heading arbitrary in 6D); angular rates in the
sensor frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from vqf import VQF

G = 9.80665  # m/s^2 per g


def quat_multiply(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product ``q1 * q2`` of (w, x, y, z) quaternions, row-wise; shapes broadcast (..., 4)."""
    w1, x1, y1, z1 = np.moveaxis(np.asarray(q1, dtype=float), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(np.asarray(q2, dtype=float), -1, 0)
    return np.stack((
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ), axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate (= inverse for unit quaternions) of (w, x, y, z) quaternions, shape (..., 4)."""
    return np.asarray(q, dtype=float) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) of rotation vectors (..., 3) in rad (axis * angle)."""
    rotvec = np.asarray(rotvec, dtype=float)
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    # sin(a/2)/a -> 1/2 for a -> 0; the Taylor term keeps small angles exact without a 0/0.
    small = angle < 1e-8
    scale = np.where(small, 0.5 - angle**2 / 48.0, np.sin(angle / 2) / np.where(small, 1.0, angle))
    return np.concatenate((np.cos(angle / 2), rotvec * scale), axis=-1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) in rad, angle in [0, pi], of (w, x, y, z) quaternions (..., 4)."""
    q = np.asarray(q, dtype=float)
    q = np.where(q[..., :1] < 0, -q, q)  # q and -q are the same rotation: take the short way
    vec_norm = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(vec_norm, q[..., :1])
    small = vec_norm < 1e-12
    return q[..., 1:] * np.where(small, 2.0, angle / np.where(small, 1.0, vec_norm))


def inclination_error_deg(quat_est: np.ndarray, quat_ref: np.ndarray) -> np.ndarray:
    """Inclination error (deg), shape (n,), as defined by BROAD (Laidig et al., Data 6(7), 2021).

    Both inputs are (n, 4) sensor -> earth quaternions. The error quaternion in the earth frame
    is ``e = q_est * conj(q_ref)``; the inclination error is the angle of its smallest rotation
    that is not about the earth's vertical, ``2 * arccos(sqrt(e_w^2 + e_z^2))``, which equals the
    angle between the estimated and the true vertical axis seen from the sensor. It ignores
    heading, so an estimate whose earth frame is turned about the vertical has no error. NaN rows
    (lost markers) give NaN.
    """
    q_est = np.asarray(quat_est, dtype=float)
    q_ref = np.asarray(quat_ref, dtype=float)
    q_est = q_est / np.linalg.norm(q_est, axis=-1, keepdims=True)
    q_ref = q_ref / np.linalg.norm(q_ref, axis=-1, keepdims=True)
    e = quat_multiply(q_est, quat_conjugate(q_ref))
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return np.rad2deg(2 * np.arccos(np.clip(np.sqrt(e[..., 0] ** 2 + e[..., 3] ** 2), 0.0, 1.0)))


def angular_rate_from_quat(quat: np.ndarray, rate_hz: float) -> np.ndarray:
    """Angular rate (rad/s) in the sensor frame, shape (n, 3), from sensor -> earth quaternions
    sampled at ``rate_hz``: central difference ``rotvec(conj(q[k-1]) * q[k+1]) * rate / 2``,
    exact for a constant rate. The first and last rows, and rows next to NaN samples, are NaN."""
    q = np.asarray(quat, dtype=float)
    out = np.full((len(q), 3), np.nan)
    if len(q) >= 3:
        out[1:-1] = quat_to_rotvec(quat_multiply(quat_conjugate(q[:-2]), q[2:])) * rate_hz / 2
    return out


def estimate_gyro_delay_s(gyro_rad_s: np.ndarray, quat_ref: np.ndarray, rate_hz: float,
                          max_lag: int = 10) -> float:
    """How long (s) the gyroscope signal lags the true motion, measured against a reference.

    ``gyro_rad_s`` (n, 3) is the sensor's gyroscope in rad/s, ``quat_ref`` (n, 4) a time-aligned
    reference orientation (e.g. optical motion capture), sensor -> earth. The reference angular
    rate is differentiated from ``quat_ref`` (central differences, see ``angular_rate_from_quat``),
    the gyroscope is shifted by whole samples, and the lag minimising the mean squared rate
    difference is refined to a fraction of a sample by a parabola through the three best lags.
    Positive: the gyroscope is late. This uses no orientation filter, so it cannot be tuned to a
    filter's error.
    """
    w_ref = angular_rate_from_quat(quat_ref, rate_hz)
    gyro = np.asarray(gyro_rad_s, dtype=float)
    n = len(gyro)
    valid = np.isfinite(w_ref).all(axis=1)
    valid[:max_lag] = valid[n - max_lag:] = False
    idx = np.flatnonzero(valid)
    lags = np.arange(-max_lag, max_lag + 1)
    # A gyroscope late by L samples shows at k + L what happened at k.
    cost = np.array([np.mean(np.sum((gyro[idx + lag] - w_ref[idx]) ** 2, axis=1)) for lag in lags])
    k = int(np.clip(np.argmin(cost), 1, len(lags) - 2))
    c_lo, c_mid, c_hi = cost[k - 1], cost[k], cost[k + 1]
    curvature = c_lo - 2 * c_mid + c_hi
    frac = 0.5 * (c_lo - c_hi) / curvature if curvature > 0 else 0.0
    return float((lags[k] + frac) / rate_hz)


@dataclass(frozen=True)
class GapSettings:
    """How :class:`SegmentOrientation` crosses samples missing from its stream (lost packets, a disconnect,
    a sensor reboot).

    ``bridge_max_s``: gaps up to this long (s) are bridged by integrating the gyroscope rate linearly
    interpolated between the last sample before and the first after the gap (no accelerometer step
    for the missing samples). A lost BLE packet is 50 ms; across it a knee segment in a sprint turns up
    to ~30 deg, which treating the gap as continuous would leave as an orientation error that VQF's
    accelerometer correction (tauAcc 3 s, disturbed by running impacts) removes only over seconds.
    The rate varies little over 0.25 s against the 1-3 Hz of human movement, so the interpolated rate
    integrates to within a degree or two.

    Longer gaps cannot be bridged: the orientation is held, and the inclination is re-acquired from the
    accelerometer: VQF's low-pass filter of the accelerometer in the earth frame restarts in its
    initialisation mode (the running mean over its first ``tauAcc`` seconds), so the stale pre-gap
    average no longer pulls the inclination. The heading (unobservable in 6D) is kept as it was.

    ``max_continuity_error``: with sample times only (no stream indices), a step between frames longer
    than ``1 + max_continuity_error`` sample periods counts as a gap.
    """

    bridge_max_s: float = 0.25
    max_continuity_error: float = 0.5


@dataclass(frozen=True)
class StillBiasSettings:
    """Gyroscope bias from standing still, for :class:`SegmentOrientation` (``still_bias=``).

    In 6D the bias about the earth's vertical is unobservable while moving (VQF's motion bias estimate
    corrects only the horizontal part), so a constant bias turns the heading at its full rate: 0.2-0.5 deg/s
    per axis is 10-30 deg per minute, and between two sensors of a joint it becomes a relative heading drift
    that the joint-angle stage must then follow. A still stretch of ``min_still_s`` (angular rate norm below
    ``gyro_dps``, accelerometer norm within ``accel_tol_g`` of 1 g) measures the whole bias directly: its mean
    gyro rate. Each such stretch hands that mean to VQF (``setBiasEstimate``, uncertainty ``sigma_dps``) at
    the sample where it reaches ``min_still_s``, once per stretch. VQF's own rest detection needs 1.5 s under
    2 deg/s of its low-passed rate and misses the 1-2 s standing at a session's start.
    """

    min_still_s: float = 1.0
    gyro_dps: float = 2.0
    accel_tol_g: float = 0.05
    sigma_dps: float = 0.05


class SegmentOrientation:
    """Streaming orientation of one sensor. ``update`` takes accel (g) and gyro (deg/s) in the
    sensor frame, shape (n, 3), and returns the 6D quaternions (w, x, y, z), sensor -> earth.

    Settings:

    * ``gyro_delay_s``: the sensor's gyroscope latency behind the true motion (s), a property of
      the sensor model and its configured low-pass filter (datasheet group delay, or measured
      against a reference with ``estimate_gyro_delay_s``). ``None`` (default) leaves VQF's output
      as it is. With a value ``D``, each output sample ``k`` is predicted forward by
      ``h = D - T/2`` (``T`` = sample period) with the gyro rate ``w_k`` (bias-corrected by
      VQF): ``q_out = q_k * exp(w_k h / 2)``. Why ``- T/2``: VQF integrates the step from ``k-1``
      to ``k`` with the newest sample ``w_k``, which already puts its estimate half a sample
      ahead of a delay-free gyroscope. The prediction is stateless, so chunking cannot change it.
    * ``vqf_params``: VQF parameters (e.g. ``{"tauAcc": 3.0}``) overriding VQF's defaults; none
      are overridden by default.
    * ``gaps``: :class:`GapSettings`, used when ``update`` is given sample times or stream indices.
    * ``still_bias``: :class:`StillBiasSettings`: set the gyro bias from still stretches (off by default).
      ``bias_updates`` counts the stretches used.

    Gaps: given ``t_ns`` (sample wall times, ns) and/or ``first_index`` (the stream index of the
    chunk's first sample, as in a data frame), a chunk that does not continue the previous one is
    bridged (see :class:`GapSettings`). An index jump counts the lost samples exactly; an index that
    goes back (a sensor reboot restarts it) takes the gap's length from the sample times.
    ``gap_count`` / ``long_gap_count`` count them; ``long_gaps`` holds, for the latest long gaps, the
    times (ns) of the last sample before and the first after, when sample times were given (for stages
    that must re-acquire something after one).
    """

    def __init__(self, rate_hz: float, *, gyro_delay_s: float | None = None,
                 vqf_params: Mapping[str, float | bool] | None = None, gaps: GapSettings | None = None,
                 still_bias: StillBiasSettings | None = None) -> None:
        self.rate_hz = rate_hz
        self.still_bias = still_bias
        self._still_run = 0  # still samples in the stretch going on at the end of the last chunk
        self._still_sum = np.zeros(3)  # their gyro sum, rad/s
        self.bias_updates = 0
        self.gyro_delay_s = gyro_delay_s
        self.gap_settings = gaps or GapSettings()
        self._vqf = VQF(1.0 / rate_hz, **dict(vqf_params or {}))
        self._horizon_s = None if gyro_delay_s is None else gyro_delay_s - 0.5 / rate_hz
        self._last_gyr: np.ndarray | None = None  # rad/s, the newest sample fed
        self._next_index: int | None = None  # stream index expected next
        self._next_t_ns: float | None = None  # wall time (ns) expected for the next sample
        self.gap_count = 0
        self.long_gap_count = 0
        self.missing_samples = 0
        self.long_gaps: deque[tuple[int, int]] = deque(maxlen=16)

    def _missing_before(self, t_ns: np.ndarray | None, first_index: int | None) -> int:
        """Samples missing between the previous chunk and this one (0: continuous)."""
        if self._last_gyr is None:
            return 0
        steps = None if t_ns is None or self._next_t_ns is None else \
            (float(t_ns[0]) - self._next_t_ns) * self.rate_hz / 1e9
        if first_index is not None and self._next_index is not None:
            if first_index >= self._next_index:
                return int(first_index - self._next_index)
            # The index went back: the sensor rebooted (>= 1 sample lost); the times tell how many.
            return max(int(round(steps)), 1) if steps is not None else 1
        if steps is not None and steps > self.gap_settings.max_continuity_error:
            return int(round(steps))
        return 0

    def _bridge(self, missing: int, gyr_next: np.ndarray, t_resume_ns: int | None) -> None:
        assert self._last_gyr is not None
        self.gap_count += 1
        self.missing_samples += missing
        if missing <= self.gap_settings.bridge_max_s * self.rate_hz:
            w = np.linspace(0.0, 1.0, missing + 2)[1:-1, None]
            gyr = np.ascontiguousarray(self._last_gyr * (1.0 - w) + gyr_next * w)
            # VQF skips the accelerometer step for an all-zero sample: gyro-only prediction.
            self._vqf.updateBatch(gyr, np.zeros_like(gyr))
            return
        self.long_gap_count += 1
        if t_resume_ns is not None and self._next_t_ns is not None:
            self.long_gaps.append((int(round(self._next_t_ns - 1e9 / self.rate_hz)), t_resume_ns))
        state = self._vqf.state
        state["accLpState"] = np.full_like(np.asarray(state["accLpState"], dtype=float), np.nan)
        self._vqf.state = state

    def update(self, accel_g: np.ndarray, gyro_dps: np.ndarray, t_ns: np.ndarray | None = None,
               first_index: int | None = None) -> np.ndarray:
        """Feed the next n samples (accel in g, gyro in deg/s, sensor frame, shape (n, 3)); return
        their orientation quaternions (n, 4), sensor -> earth. State carries across calls. ``t_ns``
        (n,) sample times (Unix ns) and ``first_index`` (stream index of the first sample) let the
        stage see and bridge gaps (see the class docstring); without them samples are taken as
        continuous."""
        gyr = np.ascontiguousarray(np.deg2rad(gyro_dps), dtype=float)
        acc = np.ascontiguousarray(np.asarray(accel_g, dtype=float) * G)
        if len(gyr) == 0:
            return np.empty((0, 4))
        if t_ns is not None and len(gyr) > 1:
            # A chunk that holds a gap itself (gateway frames never do) is cut there: the same result as
            # receiving it in frames, the part after the gap located by its times.
            cut = np.flatnonzero(np.diff(t_ns) > (1 + self.gap_settings.max_continuity_error) * 1e9 / self.rate_hz)
            if cut.size:
                parts = np.split(np.arange(len(gyr)), cut + 1)
                out = [self._update_run(acc[parts[0]], gyr[parts[0]], t_ns[parts[0]], first_index)]
                for part in parts[1:]:
                    self._next_index = None  # the index after a gap inside a chunk is unknown
                    out.append(self._update_run(acc[part], gyr[part], t_ns[part], None))
                return np.concatenate(out)
        return self._update_run(acc, gyr, t_ns, first_index)

    def _update_run(self, acc: np.ndarray, gyr: np.ndarray, t_ns: np.ndarray | None,
                    first_index: int | None) -> np.ndarray:
        """``update`` for samples without a gap among them (acc m/s^2, gyr rad/s)."""
        acc, gyr = np.ascontiguousarray(acc), np.ascontiguousarray(gyr)
        missing = self._missing_before(t_ns, first_index)
        if missing > 0:
            self._bridge(missing, gyr[0], None if t_ns is None else int(t_ns[0]))
            self._still_run, self._still_sum = 0, np.zeros(3)  # a still stretch does not span a gap
        self._last_gyr = gyr[-1].copy()
        self._next_index = None if first_index is None else first_index + len(gyr)
        if t_ns is not None:
            self._next_t_ns = float(t_ns[-1]) + 1e9 / self.rate_hz
        sets = self._still_bias_points(acc, gyr)
        if not sets:
            out = self._vqf.updateBatch(gyr, acc)
            quat, bias = out["quat6D"], out["bias"]
        else:  # cut where a bias is set: the same result however the stream is chunked
            quats, biases, start = [], [], 0
            for end, b in [*sets, (len(gyr), None)]:
                if end > start:
                    out = self._vqf.updateBatch(gyr[start:end], acc[start:end])
                    quats.append(out["quat6D"])
                    biases.append(out["bias"])
                if b is not None:
                    self._vqf.setBiasEstimate(b, float(np.deg2rad(self.still_bias.sigma_dps)))
                    self.bias_updates += 1
                start = end
            quat, bias = np.concatenate(quats), np.concatenate(biases)
        if self._horizon_s is None:
            return quat
        # Right-multiplying rotates about sensor axes, where the gyroscope measures.
        return quat_multiply(quat, quat_from_rotvec((gyr - bias) * self._horizon_s))

    def _still_bias_points(self, acc: np.ndarray, gyr: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(index after which to set the bias, mean gyro rate of the still stretch (rad/s))`` for every still
        stretch reaching ``min_still_s`` in this run of samples (acc m/s^2, gyr rad/s); carries the stretch
        in progress to the next call (vectorised run lengths and cumulative sums)."""
        sb = self.still_bias
        if sb is None:
            return []
        n = len(gyr)
        need = max(int(round(sb.min_still_s * self.rate_hz)), 1)
        still = ((np.einsum("ij,ij->i", gyr, gyr) < np.deg2rad(sb.gyro_dps) ** 2)
                 & (np.abs(np.sqrt(np.einsum("ij,ij->i", acc, acc)) / G - 1.0) < sb.accel_tol_g))
        if not still.any():  # moving: the usual case, nothing to carry
            self._still_run, self._still_sum = 0, np.zeros(3)
            return []
        idx = np.arange(n)
        last_break = np.maximum.accumulate(np.where(~still, idx, -1))
        run = np.where(still, np.where(last_break >= 0, idx - last_break, idx + 1 + self._still_run), 0)
        cs = np.cumsum(gyr * still[:, None], axis=0)
        before = np.where(last_break[:, None] >= 0, cs[np.maximum(last_break, 0)], -self._still_sum)
        run_sum = cs - before  # gyro sum over the still stretch ending at each sample
        self._still_run = int(run[-1])
        self._still_sum = run_sum[-1] if still[-1] else np.zeros(3)
        return [(int(i) + 1, run_sum[i] / need) for i in np.flatnonzero(run == need)]


def gravity_in_sensor(quat: np.ndarray) -> np.ndarray:
    """Unit 'up' vector of the earth frame expressed in the sensor frame, shape (n, 3).

    The third row of the rotation matrix of q (sensor -> earth) is earth-z in sensor coordinates.
    """
    w, x, y, z = quat.T
    return np.column_stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)))


def sagittal_inclination_deg(quat: np.ndarray) -> np.ndarray:
    """Segment inclination in its sagittal plane (degrees): rotation of the sensor about its own
    y axis (medio-lateral, the knee's flexion axis) away from upright; positive tilts the sensor's
    z axis toward its +x (anterior) axis. Needs no heading, so 6D orientation is enough."""
    up = gravity_in_sensor(quat)
    return np.rad2deg(np.arctan2(-up[:, 0], up[:, 2]))
