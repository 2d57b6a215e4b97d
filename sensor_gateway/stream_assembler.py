"""One sensor stream: decoded packets in, checked for sequence and timing, ~50 ms frames out."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from jointmon.const import FRAME_DURATION_S, REORDER_WINDOW_US, SEQ_REBOOT_JUMP
from jointmon.frames import FLAG_GAP_BEFORE, Frame
from jointmon.packets import Packet, StreamType
from jointmon.ratelimit import RateLimitedLog
from sensor_gateway.clock_map import ClockMap

log = logging.getLogger("jointmon.gateway.stream")
_U32 = 1 << 32


class StreamAssembler:
    """Turns the packets of one (sensor, stream) into frames of ``frame_samples`` samples.

    Sample positions come from the sensor timestamps (``t0_us``, unwrapped), so a lost packet
    becomes a jump in ``first_index`` and a frame flagged ``FLAG_GAP_BEFORE``; never shifted data.
    Counters (``self.counters``): packets, samples, stale_seq, lost_packets, gap_samples, restarts.
    """

    def __init__(self, stream: StreamType, clock: ClockMap, label: str = "",
                 frame_duration_s: float = FRAME_DURATION_S) -> None:
        self.stream = stream
        self.clock = clock
        self.label = label or stream.name
        self.frame_duration_s = frame_duration_s
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedLog(log)
        self._reset()

    def _reset(self) -> None:
        self._last_seq: int | None = None
        self._last_t0_us = 0  # unwrapped
        self._start_us = 0
        self._rate_hz = 0
        self._scale: np.ndarray | None = None
        self._frame_samples = 0
        self._next_index = 0
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._pending_first = 0
        self._pending_flags = 0
        self._frame_seq = getattr(self, "_frame_seq", 0)  # frame_seq never restarts: subscribers count on it

    def push(self, pkt: Packet, arrival_ns: int) -> list[Frame]:
        """Add one decoded packet that arrived at ``arrival_ns`` (Unix ns); return completed frames."""
        frames: list[Frame] = []
        if self._last_seq is not None:
            step = (pkt.seq - self._last_seq) & 0xFFFF
            t0_us = self._unwrap(pkt.t0_us)
            clock_back = t0_us < self._last_t0_us - REORDER_WINDOW_US
            if (step == 0 or step >= 0x8000) and not clock_back:  # duplicate or behind the newest packet
                self.counters["stale_seq"] += 1
                self._warn.warning("stale", "%s: stale sequence %d after %d, dropped", self.label, pkt.seq,
                                   self._last_seq)
                return frames
            if step > SEQ_REBOOT_JUMP or clock_back or pkt.rate_hz != self._rate_hz:
                # The sensor restarted (or was reconfigured): close what we have, start a new stream.
                self.counters["restarts"] += 1
                log.warning("%s: stream restart (seq %d -> %d)", self.label, self._last_seq, pkt.seq)
                frames += self.flush()
                self._reset()
                self.clock.reanchor()  # the sensor clock restarted too
                self._pending_flags = FLAG_GAP_BEFORE
            elif step > 1:
                self.counters["lost_packets"] += step - 1
                self._warn.warning("lost", "%s: %d packet(s) lost before seq %d", self.label, step - 1, pkt.seq)
        if self._last_seq is None:
            t0_us = pkt.t0_us
            self._start_us = t0_us
            self._rate_hz = pkt.rate_hz
            self._scale = pkt.scale
            self._frame_samples = max(1, round(self.frame_duration_s * pkt.rate_hz))
            self._next_index = 0
            self._pending_first = 0
        self._last_seq = pkt.seq
        self._last_t0_us = t0_us
        count = pkt.samples.shape[0]
        self.clock.observe(t0_us + round((count - 1) * 1e6 / pkt.rate_hz), arrival_ns)

        index = round((t0_us - self._start_us) * self._rate_hz / 1e6)
        if index != self._next_index:
            if index < self._next_index:  # overlaps samples already sent: the timestamps are inconsistent
                self.counters["overlap_dropped"] += 1
                self._warn.warning("overlap", "%s: packet overlaps earlier samples, dropped", self.label)
                return frames
            self.counters["gap_samples"] += index - self._next_index
            frames += self._emit(force=True)
            self._pending_first = index
            self._pending_flags |= FLAG_GAP_BEFORE
        self._pending.append(pkt.samples)
        self._pending_count += count
        self._next_index = index + count
        self.counters["packets"] += 1
        self.counters["samples"] += count
        frames += self._emit(force=False)
        return frames

    def flush(self) -> list[Frame]:
        """Emit whatever is pending as a (possibly short) frame, e.g. at the end of a session."""
        return self._emit(force=True)

    def _unwrap(self, t0_us: int) -> int:
        diff = (t0_us - self._last_t0_us) % _U32
        if diff >= _U32 // 2:
            diff -= _U32
        return self._last_t0_us + diff

    def _emit(self, force: bool) -> list[Frame]:
        if self._pending_count == 0 or (not force and self._pending_count < self._frame_samples):
            return []
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_frames = self._pending_count // self._frame_samples
        cut = self._pending_count if force else n_frames * self._frame_samples
        frames = []
        for start in range(0, cut, self._frame_samples):
            block = data[start:min(start + self._frame_samples, cut)]
            first = self._pending_first + start
            t0_ns = self.clock.to_wall_ns(self._start_us * 1000 + round(first * 1e9 / self._rate_hz))
            frames.append(Frame(self.stream, self._frame_seq, first, t0_ns, float(self._rate_hz), self._scale,
                                np.ascontiguousarray(block), self._pending_flags))
            self._frame_seq += 1
            self._pending_flags = 0
        rest = data[cut:]
        self._pending = [rest] if len(rest) else []
        self._pending_count = len(rest)
        self._pending_first += cut
        return frames
