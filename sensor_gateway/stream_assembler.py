"""One sensor stream: decoded packets in, checked for sequence and timing, ~50 ms frames and gap records out."""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from jointmon.const import FRAME_DURATION_S, REORDER_WINDOW_US, SEQ_REBOOT_JUMP
from jointmon.frames import FLAG_GAP_BEFORE, Frame, Gap
from jointmon.packets import Packet, StreamType
from jointmon.ratelimit import RateLimitedLog
from sensor_gateway.clock_map import ClockMap

log = logging.getLogger("jointmon.gateway.stream")
_U32 = 1 << 32
# Frames wait for the clock fit (ClockSettings.settle_s); if a clock never settles (a stalled sensor
# clock), at most this much is held before frames go out anyway: bounded memory.
MAX_HOLD_S = 5.0
MAX_UNTAKEN_GAPS = 1000  # gap records nobody takes (a caller without publish_gap) are dropped beyond this


@dataclass
class _GapInfo:
    """A gap before the block it is attached to, until the block's first frame gives its end time."""

    reason: str  # "lost" | "reboot"
    start_sensor_ns: int | None  # first missing sample on the (same-epoch) sensor clock ("lost")
    start_wall_ns: int | None  # or already mapped with the previous clock epoch ("reboot")
    samples: int | None  # exact count ("lost"); None: from the duration ("reboot")
    packets: int


@dataclass
class _Block:
    """Consecutive samples starting at ``first`` (sample index); closed blocks end at a gap."""

    first: int
    chunks: list[np.ndarray]
    count: int
    flags: int
    gap: _GapInfo | None


class StreamAssembler:
    """Turns the packets of one (sensor, stream) into frames of ``frame_samples`` samples.

    Sample positions come from the sensor timestamps (``t0_us``, unwrapped), so a lost packet
    becomes a jump in ``first_index``, a frame flagged ``FLAG_GAP_BEFORE`` and a :class:`Gap` record
    (in :attr:`gaps`, taken by the caller); never shifted data. Frames are held until the sensor's
    clock fit has settled (``ClockMap.ready``), then go out in order.
    Counters (``self.counters``): packets, samples, stale_seq, lost_packets, gap_samples, restarts,
    overlap_dropped, gaps.
    """

    def __init__(self, stream: StreamType, clock: ClockMap, label: str = "",
                 frame_duration_s: float = FRAME_DURATION_S) -> None:
        self.stream = stream
        self.clock = clock
        self.label = label or stream.name
        self.frame_duration_s = frame_duration_s
        self.counters: Counter[str] = Counter()
        self.gaps: deque[Gap] = deque(maxlen=MAX_UNTAKEN_GAPS)  # gap records not yet taken (see take_gaps)
        self._warn = RateLimitedLog(log)
        self._frame_seq = 0  # never restarts: subscribers count on it
        self._epoch = clock.epoch
        self._reset()

    def _reset(self) -> None:
        self._last_seq: int | None = None
        self._last_t0_us = 0  # unwrapped
        self._start_us = 0
        self._rate_hz = 0
        self._scale: np.ndarray | None = None
        self._frame_samples = 0
        self._next_index = 0
        self._closed: list[_Block] = []
        self._open = _Block(0, [], 0, 0, None)
        self._held = 0  # samples in closed + open blocks

    def take_gaps(self) -> list[Gap]:
        """The gap records completed so far (each just before the frame it precedes), and forget them."""
        out = list(self.gaps)
        self.gaps.clear()
        return out

    def push(self, pkt: Packet, arrival_ns: int) -> list[Frame]:
        """Add one decoded packet that arrived at ``arrival_ns`` (Unix ns); return completed frames."""
        frames: list[Frame] = []
        restart_gap: _GapInfo | None = None
        lost = 0
        if self._last_seq is not None:
            step = (pkt.seq - self._last_seq) & 0xFFFF
            t0_us = self._unwrap(pkt.t0_us)
            clock_back = t0_us < self._last_t0_us - REORDER_WINDOW_US
            # A duplicated or re-ordered packet is behind the newest one in its clock too. A sequence that goes
            # back while the clock leaps ahead is a reboot: its clock restarted at 0, which the u32 unwrap reads
            # as a leap ahead when the old clock was past 2^31 us (a sensor up for > 36 min), so judged by the
            # clock going back alone its packets were dropped as stale until the new clock passed old - 2^31.
            behind = step == 0 or step >= 0x8000
            clock_leap = behind and t0_us > self._last_t0_us + REORDER_WINDOW_US
            if behind and not clock_back and not clock_leap:  # duplicate or behind the newest packet
                self.counters["stale_seq"] += 1
                self._warn.warning("stale", "%s: stale sequence %d after %d, dropped", self.label, pkt.seq,
                                   self._last_seq)
                return frames
            # A long disconnect also jumps the sequence, but the sensor clock moved on with it: only a
            # jump the clock does not account for (less than half the packets' time passed) is a reboot.
            pkt_us = pkt.samples.shape[0] * 1e6 / pkt.rate_hz
            long_jump = step > SEQ_REBOOT_JUMP and (t0_us - self._last_t0_us) < 0.5 * (step - 1) * pkt_us
            if long_jump or clock_back or clock_leap or pkt.rate_hz != self._rate_hz:
                # The sensor restarted (or was reconfigured): close what we have, start a new stream.
                self.counters["restarts"] += 1
                log.warning("%s: stream restart (seq %d -> %d)", self.label, self._last_seq, pkt.seq)
                frames += self._drain(force=True)
                end_wall = self.clock.to_wall_ns(self._sensor_ns(self._next_index), self._epoch)
                self._reset()
                if self.clock.epoch == self._epoch:  # the other stream of this sensor has not re-anchored yet
                    self.clock.reanchor()  # the sensor clock restarted too
                self._epoch = self.clock.epoch
                restart_gap = _GapInfo("reboot", None, end_wall, None, 0)
            elif step > 1:
                lost = step - 1
                self.counters["lost_packets"] += lost
                self._warn.warning("lost", "%s: %d packet(s) lost before seq %d", self.label, lost, pkt.seq)
        if self._last_seq is None:
            t0_us = pkt.t0_us
            self._start_us = t0_us
            self._rate_hz = pkt.rate_hz
            self._scale = pkt.scale
            self._frame_samples = max(1, round(self.frame_duration_s * pkt.rate_hz))
            self._next_index = 0
            self._open = _Block(0, [], 0, FLAG_GAP_BEFORE if restart_gap else 0, restart_gap)
        self._last_seq = pkt.seq
        self._last_t0_us = t0_us
        count = pkt.samples.shape[0]
        self.clock.observe(t0_us + round((count - 1) * 1e6 / pkt.rate_hz), arrival_ns, self._epoch)

        index = round((t0_us - self._start_us) * self._rate_hz / 1e6)
        if index != self._next_index:
            if index < self._next_index:  # overlaps samples already sent: the timestamps are inconsistent
                self.counters["overlap_dropped"] += 1
                self._warn.warning("overlap", "%s: packet overlaps earlier samples, dropped", self.label)
                return frames
            missing = index - self._next_index
            self.counters["gap_samples"] += missing
            gap = _GapInfo("lost", self._sensor_ns(self._next_index), None, missing, lost)
            if self._open.count:
                self._closed.append(self._open)
            self._open = _Block(index, [], 0, FLAG_GAP_BEFORE, gap)
        self._open.chunks.append(pkt.samples)
        self._open.count += count
        self._held += count
        self._next_index = index + count
        self.counters["packets"] += 1
        self.counters["samples"] += count
        frames += self._drain(force=False)
        return frames

    def flush(self) -> list[Frame]:
        """Emit whatever is pending as (possibly short) frames, e.g. at the end of a session."""
        return self._drain(force=True)

    def _unwrap(self, t0_us: int) -> int:
        diff = (t0_us - self._last_t0_us) % _U32
        if diff >= _U32 // 2:
            diff -= _U32
        return self._last_t0_us + diff

    def _sensor_ns(self, index: int) -> int:
        """Unwrapped sensor clock (ns) of sample ``index`` of the current stream."""
        return self._start_us * 1000 + round(index * 1e9 / self._rate_hz)

    def _drain(self, force: bool) -> list[Frame]:
        """Frames from the held blocks: closed blocks entirely, the open one in whole frames (all if
        ``force``). Nothing goes out before the clock fit settles, unless forced or holding too much."""
        if self._held == 0:
            return []
        if not force and not self.clock.ready(self._epoch) and self._held < MAX_HOLD_S * self._rate_hz:
            return []
        frames: list[Frame] = []
        for block in self._closed:
            frames += self._frames(block, block.count)
        self._closed = []
        n = self._open.count if force else self._open.count // self._frame_samples * self._frame_samples
        if n:
            frames += self._frames(self._open, n)
        return frames

    def _frames(self, block: _Block, n: int) -> list[Frame]:
        """Cut the first ``n`` samples of ``block`` into frames (the last one short if ``n`` is not a
        multiple of the frame size); the block keeps the rest."""
        data = np.concatenate(block.chunks) if len(block.chunks) > 1 else block.chunks[0]
        frames = []
        for start in range(0, n, self._frame_samples):
            samples = data[start:min(start + self._frame_samples, n)]
            first = block.first + start
            t0_ns = self.clock.to_wall_ns(self._sensor_ns(first), self._epoch)
            if block.gap is not None:
                self._gap_record(block.gap, first, t0_ns)
                block.gap = None
            frames.append(Frame(self.stream, self._frame_seq, first, t0_ns, float(self._rate_hz), self._scale,
                                np.ascontiguousarray(samples), block.flags))
            self._frame_seq += 1
            block.flags = 0
        rest = data[n:]
        block.chunks = [rest] if len(rest) else []
        block.count -= n
        block.first += n
        self._held -= n
        return frames

    def _gap_record(self, gap: _GapInfo, first: int, t0_ns: int) -> None:
        if gap.start_wall_ns is not None:
            start = gap.start_wall_ns
        else:
            assert gap.start_sensor_ns is not None
            start = self.clock.to_wall_ns(gap.start_sensor_ns, self._epoch)
        duration = max(0, t0_ns - start)
        samples = gap.samples if gap.samples is not None else round(duration * self._rate_hz / 1e9)
        self.counters["gaps"] += 1
        self.gaps.append(Gap(self.stream, gap.reason, start, duration, samples, gap.packets, self._frame_seq,
                             first, float(self._rate_hz)))
