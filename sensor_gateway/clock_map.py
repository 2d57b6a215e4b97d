"""Sensor clock -> wall clock for one sensor (shared by its IMU and microphone streams).

The fit. Each packet gives one observation: the sensor time of its last sample ``tau`` and the
gateway's arrival time ``a``. ``a - tau = offset + drift·tau + delay`` with ``delay >= 0`` (BLE
delivery: connection events, retransmissions, the host stack), so the *lower envelope* of
``a - tau`` over sensor time is the delay-free line. The map keeps the minimum of ``a - tau`` per
``bucket_s`` of sensor time over a sliding ``window_s`` (bounded memory), takes the drift as the
Theil-Sen slope of those minima (robust to a bucket without a fast packet) and puts the line under
all of them (lower envelope). Samples keep their sensor timing: a frame's time is this line at the
sensor time of its first sample, never an arrival time.

Continuity. Published times must never jump (backwards or forwards) when the fit improves. The
mapping is piecewise linear in sensor time: until its first use (a frame is built) it may be
replaced freely; after that a new fit only *continues* it from the newest sensor time, slewing at
most ``max_slew_ppm`` towards the new line, so it stays continuous and strictly increasing
(``max_slew_ppm`` < 1250 ppm keeps even consecutive 16 kHz frames of 800 samples in order).
The stream assembler holds its first frames until ``settle_s`` of observations are in, so the
first published times already come from a good fit and not from one packet's arrival.

Reboots. The sensor clock restarts: :meth:`ClockMap.reanchor` starts a new *epoch* (a new fit);
the previous epoch's mapping stays readable, so the other stream of the sensor can still time the
samples it received before the reboot.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClockSettings:
    """Clock-fit parameters (units in the names)."""

    # Per bucket of sensor time the fastest packet is kept: 0.5 s holds ~90 mic + 10 IMU packets,
    # enough that one of them saw (nearly) no queueing.
    bucket_s: float = 0.5
    # Drift is fitted over this much history: 30 s resolves 1 ppm against sub-ms envelope noise and
    # follows temperature drift of a crystal (minutes); 60 buckets of memory.
    window_s: float = 30.0
    # The first frames wait for this much sensor time of observations (a stream start latency, once).
    # With 15 ms of delivery jitter the fastest packet of the first 1 s was still ~1.1 ms late, of the
    # first 2 s ~0.6 ms (BLE delivers in order: one late notification holds back the next ones).
    settle_s: float = 2.0
    # Below this span the drift is not fitted (taken as 0): over 5 s, 50 ppm is only 0.25 ms while a
    # slope from two close buckets would be noise.
    drift_min_span_s: float = 5.0
    # Crystals are within +-100 ppm; anything beyond this is a broken clock or broken arrival times.
    max_drift_ppm: float = 1000.0
    # How fast a published mapping may be corrected: 500 ppm = 0.5 ms per second.
    max_slew_ppm: float = 500.0
    # Mapping pieces older than this (sensor time behind the newest observation) are forgotten.
    history_s: float = 10.0


@dataclass(frozen=True, slots=True)
class _Piece:
    sensor_ns: int  # start of the piece, unwrapped sensor ns
    wall_ns: int  # mapped time at the start, Unix ns
    rate: float  # wall ns per sensor ns


class _BootFit:
    """The fit and the published mapping of one sensor boot (clock epoch)."""

    def __init__(self, settings: ClockSettings) -> None:
        self.s = settings
        self.ref_tau: int | None = None  # first observation: sensor ns, and a - tau (ns)
        self.ref_y = 0
        self.first_tau = self.last_tau = self.max_read_tau = 0
        self.bucket_ns = round(settings.bucket_s * 1e9)
        self.buckets: deque[tuple[int, int]] = deque(maxlen=max(2, round(settings.window_s / settings.bucket_s)))
        self.cur_bucket = 0
        self.cur_min: tuple[int, int] = (0, 0)  # (tau - ref_tau, y - ref_y) of the current bucket's minimum
        self.pieces: deque[_Piece] = deque()
        self.frozen = False  # a time was read: the mapping may only be continued from now on
        self.slope = 0.0  # (a - tau) per sensor ns: -drift
        self.observations = 0

    def observe(self, tau: int, arrival_ns: int) -> None:
        y = arrival_ns - tau
        self.observations += 1
        if self.ref_tau is None:
            self.ref_tau, self.ref_y = tau, y
            self.first_tau = self.last_tau = tau
            self.cur_min = (0, 0)
            self.pieces.append(_Piece(tau, arrival_ns, 1.0))
            return
        self.last_tau = max(self.last_tau, tau)
        t, yr = tau - self.ref_tau, y - self.ref_y
        bucket = t // self.bucket_ns
        if bucket > self.cur_bucket:
            self.buckets.append(self.cur_min)
            self.cur_bucket, self.cur_min = bucket, (t, yr)
            self._refit()
        elif yr < self.cur_min[1]:
            self.cur_min = (t, yr)
            if not self.frozen:  # cheap while young (few buckets): the held frames get the best line
                self._refit()

    @property
    def ready(self) -> bool:
        return self.ref_tau is not None and self.last_tau - self.first_tau >= self.s.settle_s * 1e9

    def _refit(self) -> None:
        pts = np.array([*self.buckets, self.cur_min], dtype=np.float64)
        t, y = pts[:, 0], pts[:, 1]
        slope = self.slope
        if t[-1] - t[0] >= self.s.drift_min_span_s * 1e9 and len(t) >= 3:
            i, j = np.triu_indices(len(t), 1)
            dt = t[j] - t[i]
            ok = dt > 0
            if ok.any():
                limit = self.s.max_drift_ppm * 1e-6
                slope = float(np.clip(np.median((y[j] - y[i])[ok] / dt[ok]), -limit, limit))  # Theil-Sen
        intercept = float(np.min(y - slope * t))  # the line under every bucket minimum: the lower envelope
        self.slope = slope
        assert self.ref_tau is not None
        # The line: wall(tau) = ref_tau + ref_y + (tau - ref_tau)·(1 + slope) + intercept. The Unix-ns terms
        # stay integers: float64 resolves only 256 ns at 1.7e18.
        base = self.ref_tau + self.ref_y
        if not self.frozen:
            self.pieces.clear()
            self.pieces.append(_Piece(self.ref_tau, base + round(intercept), 1.0 + slope))
            return
        tau_u = max(self.last_tau, self.max_read_tau)
        w_u = self.wall(tau_u)
        while len(self.pieces) > 1 and self.pieces[-1].sensor_ns > tau_u:
            self.pieces.pop()  # the unread tail of an earlier slew: replaced by this fit
        err = (base - w_u) + (tau_u - self.ref_tau) * (1.0 + slope) + intercept
        slew = self.s.max_slew_ppm * 1e-6
        if abs(err) < 1.0:  # below 1 ns: continue with the new rate
            self.pieces.append(_Piece(tau_u, w_u, 1.0 + slope))
        else:
            rate = 1.0 + slope + math.copysign(slew, err)
            dur = math.ceil(abs(err) / slew)  # sensor ns to absorb the error
            self.pieces.append(_Piece(tau_u, w_u, rate))
            self.pieces.append(_Piece(tau_u + dur, w_u + round(rate * dur), 1.0 + slope))
        horizon = self.last_tau - round(self.s.history_s * 1e9)
        while len(self.pieces) > 2 and self.pieces[1].sensor_ns <= horizon:
            self.pieces.popleft()

    def wall(self, tau: int) -> int:
        piece = self.pieces[0]
        for p in reversed(self.pieces):  # the newest piece almost always: frames are read in time order
            if p.sensor_ns <= tau:
                piece = p
                break
        return piece.wall_ns + round(piece.rate * (tau - piece.sensor_ns))

    def read(self, tau: int) -> int:
        self.frozen = True
        self.max_read_tau = max(self.max_read_tau, tau)
        return self.wall(tau)


class ClockMap:
    """Maps one sensor's clock (unwrapped µs / ns) to Unix ns, drift-aware and robust to BLE jitter.

    ``epoch`` counts sensor boots; every method takes an optional ``epoch`` (default: the current one)
    so a stream that has not yet seen the reboot keeps using the clock it was timed with.
    """

    def __init__(self, settings: ClockSettings | None = None) -> None:
        self.settings = settings or ClockSettings()
        self.epoch = 0
        self._fits: dict[int, _BootFit] = {0: _BootFit(self.settings)}

    def _fit(self, epoch: int | None) -> _BootFit:
        fit = self._fits.get(self.epoch if epoch is None else epoch)
        if fit is None:
            raise KeyError(f"clock epoch {epoch} is gone (current {self.epoch})")
        return fit

    @property
    def anchored(self) -> bool:
        return self._fit(None).ref_tau is not None

    def ready(self, epoch: int | None = None) -> bool:
        """True once ``settle_s`` of sensor time has been observed in ``epoch``: frames may go out."""
        return self._fit(epoch).ready

    def observe(self, sensor_us: int, arrival_ns: int, epoch: int | None = None) -> None:
        """Record that sensor time ``sensor_us`` (unwrapped, µs) had happened by ``arrival_ns`` (Unix ns).
        Observations of an epoch that is no longer current are ignored (its sensor clock is gone)."""
        if epoch is not None and epoch != self.epoch:
            return
        self._fit(None).observe(sensor_us * 1000, arrival_ns)

    def reanchor(self) -> int:
        """The sensor rebooted (its clock restarted): start a new fit; return the new epoch.
        The previous epoch stays readable; older ones are dropped."""
        self.epoch += 1
        self._fits[self.epoch] = _BootFit(self.settings)
        self._fits.pop(self.epoch - 2, None)
        return self.epoch

    def to_wall_ns(self, sensor_ns: int, epoch: int | None = None) -> int:
        """Wall clock (Unix ns) of sensor time ``sensor_ns`` (unwrapped sensor clock in ns). From the first
        call on, the mapping of that epoch only ever continues (continuous, increasing)."""
        fit = self._fit(epoch)
        if fit.ref_tau is None:
            raise RuntimeError("clock map used before the first packet anchored it")
        return fit.read(sensor_ns)

    @property
    def offset_ns(self) -> int | None:
        """Current mapping's offset (wall − sensor, ns) at the newest observation, None before any."""
        fit = self._fit(None)
        if fit.ref_tau is None:
            return None
        return fit.wall(fit.last_tau) - fit.last_tau

    @property
    def drift_ppm(self) -> float:
        """Fitted sensor clock error, ppm (positive: the sensor clock runs fast)."""
        return -self._fit(None).slope * 1e6
