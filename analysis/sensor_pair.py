"""Two sensors with separate clocks on one time axis, streaming.

The gateway maps each sensor's samples to wall time (Unix ns), but the two sensors of a joint
sample at different instants. :class:`SensorPair` buffers per-sample rows of both and emits the
primary sensor's rows together with the secondary's rows linearly interpolated at the primary's
times, as soon as the secondary covers them. Quaternion columns are interpolated component-wise
and renormalised (normalised lerp): between two 200 Hz samples a segment turns < 10 deg even at
2000 deg/s, where nlerp and slerp differ by < 0.01 deg, so nlerp's simplicity costs nothing.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from analysis.orientation import SegmentOrientation


def _interp_rows(t: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp`` of each column of ``fp`` (m, k) from times ``tp`` to ``t``, shape (n, k)."""
    if fp.shape[0] == 0:
        return np.empty((t.size, fp.shape[1]))
    idx = np.clip(np.searchsorted(tp, t, side="right") - 1, 0, max(tp.size - 2, 0))
    if tp.size == 1:
        return np.repeat(fp[:1], t.size, axis=0)
    t0, t1 = tp[idx].astype(float), tp[idx + 1].astype(float)
    w = np.clip((t.astype(float) - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0, 1.0)[:, None]
    return fp[idx] * (1.0 - w) + fp[idx + 1] * w


class SensorPair:
    """Aligns a secondary sensor's rows to a primary sensor's sample times.

    ``quat_columns``: slices of columns holding (w, x, y, z) quaternions; they are made sign-continuous
    before interpolation and renormalised after. ``push(sensor, t_ns, rows)`` stores rows (n, k);
    ``pop()`` returns ``(t_ns, primary_rows, secondary_rows_at_t)`` for every primary sample the
    secondary covers so far. The result does not depend on how the data were cut into calls.
    """

    def __init__(self, primary: str, secondary: str, width: int, quat_columns: tuple[slice, ...] = ()) -> None:
        self.primary, self.secondary = primary, secondary
        self._quat = quat_columns
        self._t = {primary: np.empty(0, np.int64), secondary: np.empty(0, np.int64)}
        self._rows = {primary: np.empty((0, width)), secondary: np.empty((0, width))}

    def push(self, sensor: str, t_ns: np.ndarray, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=float)
        if sensor == self.secondary:
            for sl in self._quat:  # q and -q are one rotation: keep neighbours in one hemisphere
                prev = self._rows[sensor][-1:, sl] if self._rows[sensor].shape[0] else rows[:1, sl]
                q = rows[:, sl]
                both = np.concatenate((prev, q))
                flip = np.cumprod(np.where(np.sum(both[1:] * both[:-1], axis=1) < 0, -1.0, 1.0))
                rows = rows.copy()
                rows[:, sl] = q * flip[:, None]
        self._t[sensor] = np.concatenate((self._t[sensor], np.asarray(t_ns, np.int64)))
        self._rows[sensor] = np.concatenate((self._rows[sensor], rows))

    def pop(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tp, ts = self._t[self.primary], self._t[self.secondary]
        n = int(np.count_nonzero(tp <= ts[-1])) if tp.size and ts.size else 0
        if n == 0:
            width = self._rows[self.primary].shape[1]
            return np.empty(0, np.int64), np.empty((0, width)), np.empty((0, width))
        t_out, prim = tp[:n], self._rows[self.primary][:n]
        sec = _interp_rows(t_out, ts, self._rows[self.secondary])
        for sl in self._quat:
            sec[:, sl] /= np.linalg.norm(sec[:, sl], axis=1, keepdims=True)
        # Keep the secondary rows still needed to interpolate at later primary times.
        keep = max(int(np.searchsorted(ts, t_out[-1], side="right")) - 1, 0)
        self._t[self.primary], self._rows[self.primary] = tp[n:], self._rows[self.primary][n:]
        self._t[self.secondary], self._rows[self.secondary] = ts[keep:], self._rows[self.secondary][keep:]
        return t_out, prim, sec


class GapWindows:
    """Time windows (Unix ns) in which a sensor's orientation is unknown: from its last sample before a
    long gap until ``settle_s`` after the first sample after it (the orientation filter re-acquires the
    inclination from the accelerometer then, see :class:`analysis.orientation.GapSettings`).

    ``add(sensor, last_before_ns, resume_ns)`` records one; ``mask(t_ns)`` (n,) is True where any
    recorded window covers ``t_ns``. Windows wholly before ``forget_before_ns`` may be dropped with
    ``prune``. Times come from the samples, so the mask does not depend on how data were chunked.
    """

    def __init__(self, settle_s: float) -> None:
        self.settle_ns = int(round(settle_s * 1e9))
        self._start = np.empty(0, np.int64)
        self._end = np.empty(0, np.int64)
        self._resume = np.empty(0, np.int64)
        self.added = 0  # windows added so far
        self._recent: deque[int] = deque(maxlen=16)

    def follow(self, orient: SegmentOrientation, accel_g: np.ndarray, gyro_dps: np.ndarray, t_ns: np.ndarray,
               first_index: int | None) -> np.ndarray:
        """Run one sensor's orientation over a chunk (``SegmentOrientation.update``) and record the long gaps
        it bridged in it; return its quaternions."""
        before = orient.long_gap_count
        q = orient.update(accel_g, gyro_dps, t_ns, first_index)
        new = min(orient.long_gap_count - before, orient.long_gaps.maxlen or 0)
        for gap in list(orient.long_gaps)[len(orient.long_gaps) - new:]:
            self.add(*gap)
        return q

    def add(self, last_before_ns: int, resume_ns: int) -> None:
        self._start = np.append(self._start, np.int64(last_before_ns))
        self._end = np.append(self._end, np.int64(resume_ns + self.settle_ns))
        self._resume = np.append(self._resume, np.int64(resume_ns))
        self._recent.append(int(last_before_ns))
        self.added += 1

    def last_starts(self, n: int) -> list[int]:
        """Start times (ns) of the ``n`` windows added last (up to the last 16)."""
        return list(self._recent)[-n:] if n > 0 else []

    def mask(self, t_ns: np.ndarray) -> np.ndarray:
        t = np.asarray(t_ns, np.int64)
        if not self._start.size:
            return np.zeros(t.size, bool)
        return ((t[:, None] > self._start[None, :]) & (t[:, None] < self._end[None, :])).any(axis=1)

    def settling(self, t_ns: np.ndarray) -> np.ndarray:
        """(n,) True where ``t_ns`` is in a window's settling part only (on or after its sensor's resume, covered
        by no window's gap proper): the orientation is back, its inclination still re-converging."""
        t = np.asarray(t_ns, np.int64)
        if not self._start.size:
            return np.zeros(t.size, bool)
        gap = ((t[:, None] > self._start[None, :]) & (t[:, None] < self._resume[None, :])).any(axis=1)
        return self.mask(t) & ~gap

    def prune(self, forget_before_ns: int) -> None:
        keep = self._end >= forget_before_ns
        self._start, self._end, self._resume = self._start[keep], self._end[keep], self._resume[keep]
