"""Impacts (footstrikes, landings, bar contact) on the IMU: the accelerometer's sample-to-sample jump.

An impact shakes every sensor on the limb within a sample or two; a joint sound does not (a tendon snap's
jerk is a few tenths of g). The jump ``|a[n] - a[n-1]|`` (g per sample at the IMU rate) needs no filter
state beyond the previous sample, so it is exactly streaming. Microphone transients near an impact are
the impact's crack and thud, not joint sounds: :class:`ImpactDetector` answers "was there an impact near t".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImpactSettings:
    jump_g: float = 1.2  # accelerometer jump per sample (g) that marks an impact (snap jerks <= ~0.7 g)
    veto_before_s: float = 0.030  # a sound this long before the impact is still the impact (clock jitter), s
    veto_after_s: float = 0.100  # ... and this long after (crack, mid resonance, start of the thud), s
    # low-band candidates: the thud's peak frame (16 ms) comes within ~25 ms of the jump; a snap 100 ms later stays, s
    thud_after_s: float = 0.050
    keep_s: float = 5.0  # impact history kept for late queries, s


class ImpactDetector:
    """Feed accelerometer frames per sensor (``update``); ask ``near(t_ns)``. Times are wall-clock ns."""

    def __init__(self, settings: ImpactSettings | None = None) -> None:
        self.settings = settings or ImpactSettings()
        self._last: dict[str, np.ndarray] = {}
        self._times: deque[int] = deque()
        self.count = 0

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray) -> None:
        """``t_ns`` (n,) sample times (ns), ``accel_g`` (n, 3) in g. NaN samples are ignored."""
        a = np.asarray(accel_g, dtype=float).reshape(-1, 3)
        if not a.shape[0]:
            return
        prev = self._last.get(sensor, a[:1])
        jump = np.linalg.norm(np.diff(np.concatenate((prev, a)), axis=0), axis=1)
        self._last[sensor] = a[-1:]
        hits = np.flatnonzero(np.nan_to_num(jump, nan=0.0) >= self.settings.jump_g)
        gap = round(self.settings.veto_after_s * 1e9)
        for i in hits:  # a few per impact
            t = int(t_ns[i])
            if not self._times or abs(t - self._times[-1]) > gap:
                self._times.append(t)
                self.count += 1
        horizon = int(t_ns[-1]) - round(self.settings.keep_s * 1e9)
        while self._times and self._times[0] < horizon:
            self._times.popleft()

    def near(self, t_ns: int, low_band: bool = False) -> bool:
        """Whether an impact happened between ``veto_after_s`` (``thud_after_s`` for ``low_band``) before and
        ``veto_before_s`` after ``t_ns``."""
        s = self.settings
        after = s.thud_after_s if low_band else s.veto_after_s
        lo, hi = t_ns - round(after * 1e9), t_ns + round(s.veto_before_s * 1e9)
        return any(lo <= t <= hi for t in self._times)

    def between(self, t0_ns: int, t1_ns: int, gait_s: float | None = None) -> bool:
        """Whether an impact happened in ``(t0_ns, t1_ns]`` (wall-clock ns); with ``gait_s``, only an impact that
        came within ``gait_s`` (s) after the one before it counts (foot strikes of a gait, not an isolated
        landing)."""
        if gait_s is None:
            return any(t0_ns < t <= t1_ns for t in self._times)
        gap = round(gait_s * 1e9)
        times = list(self._times)
        return any(t0_ns < t <= t1_ns and i > 0 and t - times[i - 1] <= gap for i, t in enumerate(times))

    def latest_ns(self) -> int | None:
        return self._times[-1] if self._times else None
