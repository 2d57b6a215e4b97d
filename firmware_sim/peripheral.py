"""A simulated BLE peripheral: streams one sensor's signals as protocol-v1 notification packets.

The surface mimics the parts of ``bleak.BleakClient`` the gateway uses (``start_notify``/``stop_notify``),
plus ``run()``/``stop()`` that play the role of the radio link being up. Callbacks receive the raw
packet bytes synchronously, like bleak's notification callback (without the characteristic argument).

Timing: every sample i of a stream at rate f exists at sensor time i / f seconds. A packet is sent
when its LAST sample exists; IMU and mic packets are interleaved in that order. The packet header's
``t0_us`` is the sensor clock of its FIRST sample: ``clock_offset_us + round(first_index * 1e6 / f)``
(Python ``round``, wrapped to u32 by the encoder).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence

import numpy as np

from firmware_sim.session import SensorSignals
from jointmon.gatt import IMU_CHAR_UUID, MIC_CHAR_UUID
from jointmon.packets import MAX_SAMPLES, StreamType, encode_packet

STREAMS = ("imu", "mic")
_STREAM_TYPE = {"imu": StreamType.IMU, "mic": StreamType.MIC_PCM16}
_CHAR_TO_STREAM = {IMU_CHAR_UUID: "imu", MIC_CHAR_UUID: "mic"}
_YIELD_EVERY = 32  # packets between forced event-loop yields, so other tasks (the publisher) keep running


def _packet_blocks(n_samples: int, per_packet: int, rate_hz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First sample index, end index (exclusive) and send time (s, time of the last sample) of every packet."""
    first = np.arange(0, n_samples, per_packet)
    end = np.minimum(first + per_packet, n_samples)
    return first, end, (end - 1) / rate_hz


class SimulatedPeripheral:
    """One simulated sensor streaming ``signals`` once per :meth:`run`.

    ``realtime=True`` paces packets on the event loop clock (``speed`` x real time); ``False`` sends as
    fast as possible. ``clock_offset_us`` is added to every packet timestamp (the sensor clock at the
    first sample). ``drop_packets`` lists ``(stream, packet_index)`` pairs lost over the air: they are
    not delivered but still consume their sequence number, so the receiver sees a gap.
    """

    def __init__(
        self,
        signals: SensorSignals,
        *,
        address: str,
        name: str,
        realtime: bool = True,
        speed: float = 1.0,
        clock_offset_us: int = 0,
        imu_samples_per_packet: int = 10,
        mic_samples_per_packet: int = 100,
        drop_packets: Sequence[tuple[str, int]] = (),
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        per_packet = {"imu": imu_samples_per_packet, "mic": mic_samples_per_packet}
        for stream, k in per_packet.items():
            limit = MAX_SAMPLES[_STREAM_TYPE[stream]]
            if not 0 < k <= limit:
                raise ValueError(f"{stream}_samples_per_packet must be in 1..{limit}, got {k}")
        drops = set(drop_packets)
        unknown = {s for s, _ in drops} - set(STREAMS)
        if unknown:
            raise ValueError(f"drop_packets: unknown streams {sorted(unknown)}")

        self.address = address
        self.name = name
        self.signals = signals
        self.realtime = realtime
        self.speed = float(speed)
        self.clock_offset_us = int(clock_offset_us)
        self.packets_sent: dict[str, int] = dict.fromkeys(STREAMS, 0)  # delivered to a subscribed callback
        self.samples_sent: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.packets_dropped: dict[str, int] = dict.fromkeys(STREAMS, 0)  # lost on purpose (drop_packets)
        self._callbacks: dict[str, Callable[[bytes], None]] = {}
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._schedule = self._precompute(per_packet, drops)

    def _precompute(
        self, per_packet: dict[str, int], drops: set[tuple[str, int]]
    ) -> list[tuple[float, str, int, bytes | None]]:
        """Encode every packet once: (send time s, stream, sample count, bytes or None if dropped), time-sorted."""
        sig = self.signals
        data = {"imu": (sig.imu_raw.reshape(-1, 6), sig.imu_rate_hz, sig.imu_range_code),
                "mic": (sig.mic_raw.reshape(-1, 1), sig.mic_rate_hz, 0)}
        entries: list[tuple[float, int, int, str, int, bytes | None]] = []
        for order, stream in enumerate(STREAMS):
            samples, rate, code = data[stream]
            first, end, t_send = _packet_blocks(samples.shape[0], per_packet[stream], rate)
            # Same as Python's round() (half to even); first * 1e6 is exact in float64 for years of samples.
            t0_us = self.clock_offset_us + np.rint(first * 1_000_000 / rate).astype(np.int64)
            for seq in range(first.shape[0]):  # per packet, not per sample
                pkt = None
                if (stream, seq) not in drops:
                    pkt = encode_packet(_STREAM_TYPE[stream], seq, int(t0_us[seq]), rate, code,
                                        samples[first[seq] : end[seq]])
                entries.append((float(t_send[seq]), order, seq, stream, int(end[seq] - first[seq]), pkt))
        # Sensor-time order; ties (IMU and mic last samples at the same instant) go IMU first, then by seq.
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        return [(t, stream, count, pkt) for t, _, _, stream, count, pkt in entries]

    @property
    def packet_count(self) -> dict[str, int]:
        """Packets per stream in one full run, dropped ones included."""
        counts = dict.fromkeys(STREAMS, 0)
        for _, stream, _, _ in self._schedule:
            counts[stream] += 1
        return counts

    async def start_notify(self, char_uuid: str, callback: Callable[[bytes], None]) -> None:
        """Subscribe ``callback`` to the IMU or MIC characteristic (UUIDs from :mod:`jointmon.gatt`)."""
        self._callbacks[self._stream_of(char_uuid)] = callback

    async def stop_notify(self, char_uuid: str) -> None:
        """Unsubscribe; packets of that stream are then not sent (not counted) until re-subscribed."""
        self._callbacks.pop(self._stream_of(char_uuid), None)

    @staticmethod
    def _stream_of(char_uuid: str) -> str:
        try:
            return _CHAR_TO_STREAM[char_uuid.lower()]
        except KeyError:
            raise ValueError(f"characteristic {char_uuid} does not notify sample packets") from None

    def stop(self) -> None:
        """Make :meth:`run` return soon (the link drops). Sticky: a later ``run()`` returns at once.

        Safe to call from the event loop thread or from another thread.
        """
        self._stop_requested = True
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return  # not running: the flag alone makes the next run() return at once
        if threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(wake.set)
        else:
            wake.set()

    async def run(self) -> None:
        """Stream the whole session once (every packet in sensor-time order), then return."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        start = self._loop.time()
        since_yield = 0
        for t_send, stream, count, pkt in self._schedule:
            if self._stop_requested:
                break
            if self.realtime:
                delay = start + t_send / self.speed - self._loop.time()
                if delay > 0:
                    await self._sleep(delay)
                    since_yield = 0
                    if self._stop_requested:
                        break
            if pkt is None:
                self.packets_dropped[stream] += 1
            else:
                callback = self._callbacks.get(stream)
                if callback is not None:  # a real sensor only notifies subscribed characteristics
                    callback(pkt)
                    self.packets_sent[stream] += 1
                    self.samples_sent[stream] += count
            since_yield += 1
            if since_yield >= _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0

    async def _sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` seconds, or less if :meth:`stop` is called meanwhile."""
        if self._wake is None:  # only reachable from run(), which creates it
            raise RuntimeError("_sleep() outside run()")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
