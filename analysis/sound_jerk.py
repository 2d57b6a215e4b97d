"""Tendon-snap jerks on the IMU: a short ringing of the accelerometer, told apart from smooth movement.

A tendon snapping over a bony prominence is felt as well as heard: the limb rings for a few ms along the
segment (tens of Hz, a few tenths of g), right after the thump starts. Movement itself changes the
acceleration smoothly (below ~15 Hz), and a change of direction is one kink, not a ring.

Statistic per sample ``n`` (accelerometer in g, at the IMU rate, 200 Hz): the second difference
``d2[n] = a[n] - 2 a[n-1] + a[n-2]`` (a vector) and its lag-2 product ``p[n] = -d2[n] . d2[n-2]``; the ring is
``p[n-1] + p[n] + p[n+1]`` (g^2), stamped at ``n - 2``, the middle of the seven samples it reads. An
oscillation at 50-75 Hz sampled at 200 Hz turns the sign of ``d2`` every 1.5-2 samples, so ``p`` stays
positive over several samples; noise averages out, and a single kink (one large ``d2``) gives no product.
Impacts ring too, far louder: the caller tells them apart (:mod:`analysis.impact_detector`) and compares a
ring with the sensor's own recent rings (``background``): some movements ring at every stride (a running
stride's abrupt phases), there a ring alone says nothing.

Streaming: the last six samples and two ring values are carried per sensor, so blocks of any size give the
same peaks; a time gap (lost IMU samples) or a NaN sample restarts the differences after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

_CONTEXT = 6  # samples carried: a ring value at n needs n-5 .. n+1, the next one starts 6 back


@dataclass(frozen=True)
class JerkSettings:
    min_ring_g2: float = 0.005  # ring peaks kept, g^2 (snaps ring at 0.03-0.09 g^2, a still sensor below 0.002)
    keep_s: float = 3.0  # peak history per sensor, s
    gap_factor: float = 1.6  # a sample interval this many nominal ones long is a gap, the differences restart


@dataclass
class _SensorState:
    t: np.ndarray  # the last samples' times (ns), at most _CONTEXT
    a: np.ndarray  # ... and accelerations (g), (k, 3)
    step_ns: float = 0.0  # nominal sample interval, ns (the first block's median)
    r_t: tuple[int, ...] = ()  # the last two ring values' times (ns) ...
    r_v: tuple[float, ...] = ()  # ... and values (g^2), for peaks that straddle blocks


class JerkDetector:
    """Per sensor ``update(sensor, t_ns, accel_g)``; then ``ring(t0_ns, t1_ns)`` and ``background(...)``."""

    def __init__(self, settings: JerkSettings | None = None) -> None:
        self.settings = settings or JerkSettings()
        self._state: dict[str, _SensorState] = {}
        self._peaks: dict[str, deque[tuple[int, float]]] = {}  # ring peaks per sensor: (t_ns, g^2)
        self.restarts = 0  # gaps and NaN samples that restarted a sensor's differences

    def update(self, sensor: str, t_ns: np.ndarray, accel_g: np.ndarray) -> None:
        """``t_ns`` (n,) sample times (ns), ``accel_g`` (n, 3) in g."""
        a = np.asarray(accel_g, dtype=float).reshape(-1, 3)
        t = np.asarray(t_ns, dtype=np.int64).ravel()
        if not a.shape[0]:
            return
        st = self._state.get(sensor)
        if st is None:
            st = self._state[sensor] = _SensorState(t[:0], a[:0])
        if not st.step_ns and t.size >= 2:
            st.step_ns = float(np.median(np.diff(t)))
        t_all, a_all = np.concatenate((st.t, t)), np.concatenate((st.a, a))
        # A gap or a NaN sample: what came before it cannot be differenced with what follows.
        dt = np.diff(t_all, prepend=t_all[0])
        bad = ~np.isfinite(a_all).all(axis=1)
        brk = np.flatnonzero(bad | (dt > self.settings.gap_factor * st.step_ns) if st.step_ns else bad)
        if brk.size:
            self.restarts += 1
            start = int(brk[-1]) + int(bad[brk[-1]])
            t_all, a_all = t_all[start:], a_all[start:]
            st.r_t, st.r_v = (), ()
        st.t, st.a = t_all[-_CONTEXT:], a_all[-_CONTEXT:]  # the next ring value needs these 6 samples
        if t_all.size <= _CONTEXT:
            return
        d2 = a_all[2:] - 2.0 * a_all[1:-1] + a_all[:-2]  # d2[k] at sample k + 2
        p = -np.einsum("ij,ij->i", d2[2:], d2[:-2])  # p[k] at sample k + 4
        ring = p[:-2] + p[1:-1] + p[2:]  # ring[k] from samples k .. k + 6
        rt = t_all[3:3 + ring.size]  # stamped at the middle of its samples
        # Peaks: the ring values carried from the last block come first, so a peak at a block edge is found.
        vals = np.concatenate((np.asarray(st.r_v, float), ring))
        times = np.concatenate((np.asarray(st.r_t, np.int64), rt))
        st.r_t, st.r_v = tuple(int(x) for x in times[-2:]), tuple(float(x) for x in vals[-2:])
        if vals.size < 3:
            return
        mid = vals[1:-1]
        peak = (mid >= self.settings.min_ring_g2) & (mid >= vals[:-2]) & (mid > vals[2:])
        q = self._peaks.setdefault(sensor, deque())
        for i in np.flatnonzero(peak):  # a few per second at most
            q.append((int(times[i + 1]), float(mid[i])))
        horizon = int(t_all[-1]) - round(self.settings.keep_s * 1e9)
        while q and q[0][0] < horizon:
            q.popleft()

    def ring(self, t0_ns: int, t1_ns: int) -> dict[str, tuple[int, float]]:
        """Per sensor, its largest ring peak (t_ns, g^2) in ``[t0_ns, t1_ns]``."""
        out = {}
        for sensor, q in self._peaks.items():
            best = max((p for p in q if t0_ns <= p[0] <= t1_ns), key=lambda p: p[1], default=None)
            if best is not None:
                out[sensor] = best
        return out

    def background(self, sensor: str, t0_ns: int, t1_ns: int) -> float:
        """The sensor's usual ring (g^2) in ``[t0_ns, t1_ns]``: its second largest peak there (one snap or
        impact does not raise it), 0 with fewer than two."""
        vals = sorted((v for t, v in self._peaks.get(sensor, ()) if t0_ns <= t <= t1_ns), reverse=True)
        return vals[1] if len(vals) >= 2 else 0.0
