"""Recent frame-invariant IMU features per sensor, for the kinematic detectors to look up around a candidate.

Only |accel| (g) and |gyro| (deg/s) are kept: they do not depend on how the sensor is mounted (up to 15 deg
misaligned), unlike single axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Trace:
    t_ns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    acc_g: np.ndarray = field(default_factory=lambda: np.empty(0))
    gyro_dps: np.ndarray = field(default_factory=lambda: np.empty(0))


class ImuContext:
    """|accel| and |gyro| of each sensor (sensor frame, any mounting). The consumer drops what it no longer
    needs with :meth:`trim`; at most ``max_keep_s`` seconds (behind each sensor's newest sample) are held in any
    case, so IMU data arriving far ahead of the angles is still there when the angles catch up."""

    def __init__(self, max_keep_s: float = 120.0) -> None:
        self.max_keep_ns = int(max_keep_s * 1e9)
        self._traces: dict[str, _Trace] = {}

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self._traces)

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray, gyro_dps: np.ndarray) -> None:
        """Append samples: ``t_ns`` (n,) int64, ``accel_g`` (n, 3) in g, ``gyro_dps`` (n, 3) in deg/s."""
        if len(t_ns) == 0:
            return
        tr = self._traces.setdefault(sensor, _Trace())
        t = np.concatenate((tr.t_ns, np.asarray(t_ns, np.int64)))
        a = np.concatenate((tr.acc_g, np.linalg.norm(np.asarray(accel_g, float), axis=1)))
        g = np.concatenate((tr.gyro_dps, np.linalg.norm(np.asarray(gyro_dps, float), axis=1)))
        keep = t >= t[-1] - self.max_keep_ns
        tr.t_ns, tr.acc_g, tr.gyro_dps = t[keep], a[keep], g[keep]

    def trim(self, older_than_ns: int) -> None:
        """Drop samples older than ``older_than_ns``."""
        for tr in self._traces.values():
            keep = tr.t_ns >= older_than_ns
            if not keep.all():
                tr.t_ns, tr.acc_g, tr.gyro_dps = tr.t_ns[keep], tr.acc_g[keep], tr.gyro_dps[keep]

    def covered_until_ns(self) -> int | None:
        """Newest time every known sensor has reached (None before any IMU data)."""
        if not self._traces:
            return None
        return int(min(tr.t_ns[-1] for tr in self._traces.values()))

    def accel_window(self, sensor: str, t0_ns: int, t1_ns: int) -> np.ndarray:
        """|accel| (g) of ``sensor`` with t0 <= t <= t1 (empty if unknown)."""
        tr = self._traces.get(sensor)
        if tr is None:
            return np.empty(0)
        return tr.acc_g[(tr.t_ns >= t0_ns) & (tr.t_ns <= t1_ns)]

    def max_accel(self, t0_ns: int, t1_ns: int) -> float:
        """Largest |accel| (g) of any sensor in [t0, t1]; 0 without data."""
        vals = [self.accel_window(s, t0_ns, t1_ns) for s in self._traces]
        vals = [v for v in vals if v.size]
        return float(max(v.max() for v in vals)) if vals else 0.0

    def free_fall_s(self, t0_ns: int, t1_ns: int, below_g: float) -> float:
        """Time (s) in [t0, t1] during which every sensor reads |accel| below ``below_g`` (ballistic flight: a
        free-falling body's sensors read ~0 g); 0 without data. Each sample counts for the interval to the next."""
        if not self._traces:
            return 0.0
        low_s = []
        for tr in self._traces.values():
            sel = (tr.t_ns >= t0_ns) & (tr.t_ns <= t1_ns)
            t, a = tr.t_ns[sel], tr.acc_g[sel]
            if t.size < 2:
                return 0.0
            low_s.append(float(np.sum(np.diff(t)[a[:-1] < below_g])) / 1e9)
        return min(low_s)
