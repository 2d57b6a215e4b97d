"""Impacts (footstrikes, landings, bar contact) on the IMU: the accelerometer's sample-to-sample jump.

An impact shakes every sensor on the limb within a sample or two; a joint sound does not (a tendon snap's
jerk is a few tenths of g). The jump ``|a[n] - a[n-1]|`` (g per sample at the IMU rate) needs no filter
state beyond the previous sample, so it is exactly streaming. An impact is the stretch from its first jump to
its last (the limb rings for 25-35 ms, jumps on every sensor), and its sound comes first: the crack and the
start of the thud precede the IMU's largest jumps by up to ~25 ms (the shock peaks ~12 ms after contact).
Microphone transients inside that stretch, widened by the settings below, are the impact's crack and thud,
not joint sounds: :class:`ImpactDetector` answers "was there an impact at t".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImpactSettings:
    jump_g: float = 1.2  # accelerometer jump per sample (g) that marks an impact (snap jerks <= ~0.7 g)
    merge_s: float = 0.060  # jumps closer than this to the impact's last one belong to it, s
    veto_before_s: float = 0.030  # a sound this long before the impact's first jump is the impact still, s
    # ... and this long after its last jump (high band: the crack comes inside the jumps' stretch or 0-10 ms
    # around it, ss: 4 of ~430 thud-tailed bursts later; a click 30 ms after a landing is heard), s
    veto_after_s: float = 0.030
    # Low band: the thud's peak frames come before the last jump + ~10 ms (ss: 4 of ~1000 later), while a tendon
    # snapping in the stance right after a foot strike thumps 20-60 ms after it (running), s.
    thud_after_s: float = 0.015
    keep_s: float = 5.0  # impact history kept for late queries, s
    # An impact shakes the limb for tens of ms: several jumps, on both sensors. One lone jump is something else
    # (a tendon snap's jerk on top of a fast movement, a knock on one sensor).
    min_jumps: int = 2


class ImpactDetector:
    """Feed accelerometer frames per sensor (``update``); ask ``near(t_ns)``. Times are wall-clock ns."""

    def __init__(self, settings: ImpactSettings | None = None) -> None:
        self.settings = settings or ImpactSettings()
        self._last: dict[str, np.ndarray] = {}
        self._spans: deque[list[int]] = deque()  # candidate impacts: [first jump, last jump, jumps] (ns, ns, count)
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
        merge = round(self.settings.merge_s * 1e9)
        for i in hits:  # a few per impact
            t = int(t_ns[i])
            # Sensors' frames come in any order: a jump may fall before or inside a known impact.
            span = next((sp for sp in reversed(self._spans) if sp[0] - merge <= t <= sp[1] + merge), None)
            if span is None:
                self._spans.append([t, t, 1])
            else:
                span[0], span[1] = min(span[0], t), max(span[1], t)
                span[2] += 1
                self.count += span[2] == self.settings.min_jumps
        horizon = int(t_ns[-1]) - round(self.settings.keep_s * 1e9)
        while self._spans and self._spans[0][1] < horizon:
            self._spans.popleft()

    def near(self, t_ns: int, low_band: bool = False) -> bool:
        """Whether ``t_ns`` lies from ``veto_before_s`` before an impact's first jump to ``veto_after_s``
        (``thud_after_s`` for ``low_band``) after its last one."""
        s = self.settings
        before, after = round(s.veto_before_s * 1e9), round((s.thud_after_s if low_band else s.veto_after_s) * 1e9)
        return any(sp[0] - before <= t_ns <= sp[1] + after for sp in self._impacts())

    def between(self, t0_ns: int, t1_ns: int, gait_s: float | None = None) -> bool:
        """Whether an impact began in ``(t0_ns, t1_ns]`` (wall-clock ns); with ``gait_s``, only an impact that
        began within ``gait_s`` (s) after the one before it counts (foot strikes of a gait, not an isolated
        landing)."""
        starts = [sp[0] for sp in self._impacts()]
        gap = None if gait_s is None else round(gait_s * 1e9)
        return any(t0_ns < t <= t1_ns and (gap is None or i > 0 and t - starts[i - 1] <= gap)
                   for i, t in enumerate(starts))

    def latest_ns(self) -> int | None:
        spans = self._impacts()
        return spans[-1][0] if spans else None

    def _impacts(self) -> list[list[int]]:
        return [sp for sp in self._spans if sp[2] >= self.settings.min_jumps]
