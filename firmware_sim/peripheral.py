"""A simulated BLE peripheral: streams one sensor's signals as protocol-v1 notification packets.

The surface mimics the parts of ``bleak.BleakClient`` the gateway uses (``start_notify``/``stop_notify``),
plus ``run()``/``stop()`` that play the role of the radio link being up. Callbacks receive the raw
packet bytes synchronously, like bleak's notification callback (without the characteristic argument);
a callback that takes a second positional argument also gets the arrival time (see below).

Timing: every sample i of a stream at rate f exists at sensor time i / f seconds. A packet is sent
when its LAST sample exists; IMU and mic packets are interleaved in that order. The packet header's
``t0_us`` is the sensor clock of its FIRST sample: ``clock_offset_us + round(first_index * 1e6 / f)``
(Python ``round``, wrapped to u32 by the encoder).

Link faults (:class:`firmware_sim.link_faults.LinkFaults`) change what the gateway sees, never how a
packet is encoded:

* clock drift ``d`` ppm: the sensor samples on its own crystal, so its k-th sample after boot is taken
  at session ("true") time ``boot_s + k / (f·(1 + d·1e-6))`` and holds the session signal's sample
  nearest that time (a fast clock repeats one sample every 1e6/|d| samples, a slow one skips one).
  ``t0_us`` keeps counting sensor samples, so the sensor clock gains ``d`` µs per true second.
* drops (``drop_packets`` and ``drop_rate``) and disconnects lose packets that still consume their
  sequence number: the receiver sees a gap.
* a reboot at ``reboot_at_s``: the packet being filled dies, the sensor is off the air for
  ``REBOOT_OUTAGE_S``, then sequence numbers and the sensor clock restart at 0 (offset 0) and the
  samples continue from the session signals at the true time.
* battery: the status characteristic (JSON) is notified at the start, after a reboot and whenever the
  whole-percent battery level drops.
* jitter: each notification is delivered up to ``jitter_ms`` late, never out of order (BLE is ordered).
* ``mic_codec = "ima_adpcm"`` (a link setting): the microphone goes out as IMA ADPCM packets (stream type 3,
  200 samples = 12.5 ms at 16 kHz per packet by default); the encoder state runs on across packets and
  restarts at (0, 0) after a reboot, like firmware whose encoder lives in RAM.

Arrival times: with ``realtime=False`` a two-argument callback gets ``(data, arrival_ns)`` where
``arrival_ns`` = :attr:`start_wall_ns` + delivery time in session seconds (the packet's last sample,
plus jitter), so a fast run has the wall-clock timing of a real one. With ``realtime=True`` it gets
``(data, None)``: the receiver stamps packets with its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_sim.link_faults import FW_VERSION, REBOOT_OUTAGE_S, LinkFaults
from firmware_sim.session import SensorSignals
from jointmon.gatt import ADV_COMPANY_ID, IMU_CHAR_UUID, MIC_CHAR_UUID, SERVICE_UUID, STATUS_CHAR_UUID, encode_adv_data
from jointmon.packets import MAX_ADPCM_SAMPLES, MAX_SAMPLES, StreamType, encode_adpcm_packet, encode_packet

STREAMS = ("imu", "mic")
_STREAM_TYPE = {"imu": StreamType.IMU, "mic": StreamType.MIC_PCM16}
_CHAR_TO_STREAM = {IMU_CHAR_UUID: "imu", MIC_CHAR_UUID: "mic", STATUS_CHAR_UUID: "status"}
_ORDER = {"status": -1, "imu": 0, "mic": 1}  # tie-break at equal send times
ADPCM_SAMPLES_PER_PACKET = 200  # 12.5 ms at 16 kHz, 118-byte packets: divides the 800-sample frame
_YIELD_EVERY = 32  # packets between forced event-loop yields, so other tasks (the publisher) keep running

Callback = Callable[..., None]


def _packet_blocks(n_samples: int, per_packet: int, rate_hz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First sample index, end index (exclusive) and send time (s, time of the last sample) of every packet."""
    first = np.arange(0, n_samples, per_packet)
    end = np.minimum(first + per_packet, n_samples)
    return first, end, (end - 1) / rate_hz


def _boot_samples(n: int, rate_hz: int, boot_s: float, until_s: float, clock_rate: float) -> np.ndarray:
    """Session-signal index of every sample one boot of the sensor takes (see the module docstring).

    Sample k is at session position ``boot_s·f + k / clock_rate`` (in samples) and reads the nearest
    session sample; the boot ends at ``until_s`` (s) or when the session signal ends. With no drift and
    ``boot_s`` = 0 this is exactly ``arange(n)``.
    """
    k_max = math.ceil((n - 0.5 - boot_s * rate_hz) * clock_rate) + 1
    if k_max <= 0:
        return np.empty(0, np.int64)
    k = np.arange(k_max)
    idx = np.rint(boot_s * rate_hz + k / clock_rate).astype(np.int64)
    keep = (idx <= n - 1) & (boot_s + k / (rate_hz * clock_rate) < until_s)
    return idx[keep]  # both conditions are monotone in k: this is a prefix


def wants_arrival_time(callback: Callback) -> bool:
    """True when ``callback`` can take a second positional argument (the arrival time)."""
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: call them the classic way
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # A defaulted second parameter is usually a captured loop variable (lambda d, s=stream: ...), not
    # a slot for the arrival time, unless it says so by its name.
    return len(positional) >= 2 and (positional[1].default is positional[1].empty
                                      or positional[1].name == "arrival_ns")


@dataclass(frozen=True, slots=True)
class _Notification:
    deliver_s: float  # session time the notification is handed over (send time + jitter), s
    stream: str  # "imu" | "mic" | "status"
    count: int  # samples (0 for status)
    payload: bytes | None  # None: lost over the air
    lost: str = ""  # "dropped" | "link_down" when payload is None


class SimulatedPeripheral:
    """One simulated sensor streaming ``signals`` once per :meth:`run`.

    ``realtime=True`` paces packets on the event loop clock (``speed`` x real time); ``False`` sends as
    fast as possible. ``clock_offset_us`` is added to every packet timestamp (the sensor clock at the
    first sample). ``drop_packets`` lists ``(stream, packet_index)`` pairs lost over the air: they are
    not delivered but still consume their sequence number, so the receiver sees a gap (``packet_index``
    counts the stream's packets over the whole run, across a reboot). ``faults`` adds the link faults
    of a scenario; ``seed`` (with the sensor ``name``) seeds its random drops and jitter.
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
        mic_samples_per_packet: int | None = None,
        drop_packets: Sequence[tuple[str, int]] = (),
        faults: LinkFaults | None = None,
        seed: int = 0,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        adpcm = faults is not None and faults.mic_codec == "ima_adpcm"
        if mic_samples_per_packet is None:  # the reference firmware's packet sizes (docs/protocol.md §2)
            mic_samples_per_packet = ADPCM_SAMPLES_PER_PACKET if adpcm else 100
        per_packet = {"imu": imu_samples_per_packet, "mic": mic_samples_per_packet}
        for stream, k in per_packet.items():
            limit = MAX_ADPCM_SAMPLES if stream == "mic" and adpcm else MAX_SAMPLES[_STREAM_TYPE[stream]]
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
        self.faults = faults or LinkFaults()
        self.seed = seed
        self.clock_offset_us = int(clock_offset_us) + self.faults.clock_offset_us
        self.start_wall_ns: int | None = None  # wall clock of session time 0 (Unix ns): run() sets it, unless
        # preset for a fast run (so several sensors share one session clock)
        # Real time: event-loop time of session time 0, when the sensors of one session were switched on together
        # and this one is started later (it sends what it sampled meanwhile at once); None: run() starts it.
        self.start_loop_s: float | None = None
        self.packets_sent: dict[str, int] = dict.fromkeys(STREAMS, 0)  # delivered to a subscribed callback
        self.samples_sent: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.packets_dropped: dict[str, int] = dict.fromkeys(STREAMS, 0)  # lost over the air (drops, drop_rate)
        self.packets_link_down: dict[str, int] = dict.fromkeys((*STREAMS, "status"), 0)  # lost in a disconnect
        self.status_sent = 0
        self.samples_taken: dict[str, int] = dict.fromkeys(STREAMS, 0)  # per run; differs from the signal with drift
        self.link_events: list[tuple[float, str]] = []  # (session s, "disconnect"|"reconnect"|"reboot"|"boot")
        self.advertising = True  # like the firmware: advertises while no gateway is connected (the link sets it)
        self._callbacks: dict[str, tuple[Callback, bool]] = {}
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._schedule = self._precompute(per_packet, drops)

    # ------------------------------------------------------------------ schedule

    def _boots(self) -> list[tuple[float, float, int]]:
        """(boot time s, end time s, sensor clock offset µs) of each power cycle in the session."""
        reboot = self.faults.reboot_at_s
        if reboot is None:
            return [(0.0, math.inf, self.clock_offset_us)]
        boot2 = reboot + REBOOT_OUTAGE_S
        self.link_events += [(reboot, "reboot"), (boot2, "boot")]
        return [(0.0, reboot, self.clock_offset_us), (boot2, math.inf, 0)]  # the clock restarts at 0

    def _precompute(self, per_packet: dict[str, int], drops: set[tuple[str, int]]) -> list[_Notification]:
        """Encode every notification once, in delivery order (lost ones kept, payload None)."""
        sig, faults = self.signals, self.faults
        ss_drop, ss_jitter = np.random.SeedSequence([self.seed, zlib.crc32(self.name.encode())]).spawn(2)
        rng_drop, rng_jitter = np.random.default_rng(ss_drop), np.random.default_rng(ss_jitter)
        data = {"imu": (sig.imu_raw.reshape(-1, 6), sig.imu_rate_hz, sig.imu_range_code),
                "mic": (sig.mic_raw.reshape(-1, 1), sig.mic_rate_hz, 0)}
        boots = self._boots()
        # (send time s, order, seq, stream, count, payload or None, lost reason)
        entries: list[tuple[float, int, int, str, int, bytes | None, str]] = []
        for stream in STREAMS:
            samples, rate, code = data[stream]
            pp = per_packet[stream]
            packet_no = 0  # over the whole run: indexes drop_packets and the drop_rate draws
            for b, (boot_s, until_s, offset_us) in enumerate(boots):
                idx = _boot_samples(samples.shape[0], rate, boot_s, until_s, faults.clock_rate)
                if b < len(boots) - 1:
                    idx = idx[: len(idx) // pp * pp]  # the packet being filled dies with the reboot
                taken = samples[idx]  # vectorised gather: the values the sensor reads
                first, end, _ = _packet_blocks(len(idx), pp, rate)
                t_send = boot_s + (end - 1) / (rate * faults.clock_rate)
                # Same as Python's round() (half to even); first * 1e6 is exact in float64 for years of samples.
                t0_us = offset_us + np.rint(first * 1_000_000 / rate).astype(np.int64)
                lost_random = rng_drop.random(first.shape[0]) < faults.drop_rate
                adpcm_state = (0, 0)  # the encoder restarts with the firmware
                for seq in range(first.shape[0]):  # per packet, not per sample
                    t = float(t_send[seq])
                    lost = ""
                    if (stream, packet_no) in drops or lost_random[seq]:
                        lost = "dropped"
                    elif faults.link_down(t):
                        lost = "link_down"
                    block = taken[first[seq] : end[seq]]
                    if stream == "mic" and faults.mic_codec == "ima_adpcm":
                        # Encoded even when lost: the firmware's encoder ran, the radio lost the packet.
                        adpcm_pkt, adpcm_state = encode_adpcm_packet(seq, int(t0_us[seq]), rate, block, adpcm_state)
                        pkt = None if lost else adpcm_pkt
                    else:
                        pkt = None if lost else encode_packet(_STREAM_TYPE[stream], seq, int(t0_us[seq]), rate, code,
                                                              block)
                    entries.append((t, _ORDER[stream], seq, stream, int(end[seq] - first[seq]), pkt, lost))
                    packet_no += 1
                self.samples_taken[stream] += len(idx)
        entries += self._status_entries(boots, sig.imu_raw.shape[0] / sig.imu_rate_hz)
        # Sensor-time order; ties (IMU and mic last samples at the same instant) go IMU first, then by seq.
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        for start, dur in faults.disconnects:
            self.link_events += [(start, "disconnect"), (start + dur, "reconnect")]
        self.link_events.sort()

        t_send_all = np.array([e[0] for e in entries])
        jitter = rng_jitter.uniform(0.0, faults.jitter_ms / 1000.0, len(entries)) if faults.jitter_ms else 0.0
        # BLE delivers notifications of one connection in order: a late one holds back the next.
        deliver = np.maximum.accumulate(t_send_all + jitter) if len(entries) else t_send_all
        return [_Notification(float(d), e[3], e[4], e[5], e[6]) for d, e in zip(deliver, entries, strict=True)]

    def _status_entries(self, boots: list[tuple[float, float, int]],
                        duration_s: float) -> list[tuple[float, int, int, str, int, bytes | None, str]]:
        """Status notifications: at each boot (the sensor announces itself) and at every battery step."""
        times = [(boot_s, self.faults.battery_level(boot_s)) for boot_s, _, _ in boots if boot_s < duration_s]
        times += [(t, lv) for t, lv in self.faults.battery_steps(duration_s)
                  if not any(until <= t < until + REBOOT_OUTAGE_S for _, until, _ in boots)]  # off during reboot
        out: list[tuple[float, int, int, str, int, bytes | None, str]] = []
        for i, (t, level) in enumerate(sorted(times)):
            lost = "link_down" if self.faults.link_down(t) else ""
            out.append((t, _ORDER["status"], i, "status", 0, None if lost else self.status_json(level), lost))
        return out

    def status_json(self, battery_pct: int) -> bytes:
        """The status characteristic's value (UTF-8 JSON, docs/protocol.md §1) at a battery level (%)."""
        sig = self.signals
        return json.dumps({"battery_pct": int(battery_pct), "fw_version": FW_VERSION,
                           "imu_rate_hz": sig.imu_rate_hz, "mic_rate_hz": sig.mic_rate_hz},
                          separators=(",", ":")).encode()

    @property
    def packet_count(self) -> dict[str, int]:
        """Packets per stream in one full run, dropped ones included."""
        counts = dict.fromkeys(STREAMS, 0)
        for n in self._schedule:
            if n.stream in counts:
                counts[n.stream] += 1
        return counts

    def describe(self) -> dict[str, Any]:
        """Static facts about this sensor (rates, ranges, clock, faults), e.g. for a recording's metadata."""
        sig = self.signals
        return {"imu_rate_hz": sig.imu_rate_hz, "mic_rate_hz": sig.mic_rate_hz, "imu_range_code": sig.imu_range_code,
                "mic_range_code": 0, "fw_version": FW_VERSION, "clock_offset_us": self.clock_offset_us,
                "battery_start_pct": self.faults.battery_start_pct, "faults": self.faults.describe(),
                "samples_taken": dict(self.samples_taken)}

    # ------------------------------------------------------------------ advertising

    def advertisement(self, t_s: float = 0.0) -> dict[str, Any]:
        """What the sensor advertises at session time ``t_s`` (docs/protocol.md §1, "Advertising"): the
        service UUID, its name (scan response) and manufacturer data with the battery level; the receiver
        adds the RSSI. Keys as in bleak's ``AdvertisementData``."""
        return {"address": self.address, "name": self.name, "service_uuids": [SERVICE_UUID],
                "manufacturer_data": {ADV_COMPANY_ID: encode_adv_data(self.faults.battery_level(t_s))}}

    # ------------------------------------------------------------------ GATT surface

    async def start_notify(self, char_uuid: str, callback: Callback) -> None:
        """Subscribe ``callback`` to the IMU, MIC or status characteristic (UUIDs from :mod:`jointmon.gatt`).

        ``callback(data)`` or ``callback(data, arrival_ns)``: see the module docstring.
        """
        self._callbacks[self._stream_of(char_uuid)] = (callback, wants_arrival_time(callback))

    async def stop_notify(self, char_uuid: str) -> None:
        """Unsubscribe; packets of that stream are then not sent (not counted) until re-subscribed."""
        self._callbacks.pop(self._stream_of(char_uuid), None)

    @staticmethod
    def _stream_of(char_uuid: str) -> str:
        try:
            return _CHAR_TO_STREAM[char_uuid.lower()]
        except KeyError:
            raise ValueError(f"characteristic {char_uuid} does not notify sample packets or status") from None

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
        if self.realtime or self.start_wall_ns is None:  # in real time, session time 0 is now, whatever was preset
            self.start_wall_ns = time.time_ns()
        if self.realtime and self.start_loop_s is not None and self.start_loop_s <= start:
            self.start_wall_ns -= round((start - self.start_loop_s) * 1e9)
            start = self.start_loop_s
        start_ns = self.start_wall_ns
        since_yield = 0
        for note in self._schedule:
            if self._stop_requested:
                break
            if self.realtime:
                delay = start + note.deliver_s / self.speed - self._loop.time()
                if delay > 0:
                    await self._sleep(delay)
                    since_yield = 0
                    if self._stop_requested:
                        break
            stream = note.stream
            if note.payload is None:
                if note.lost == "dropped":
                    self.packets_dropped[stream] += 1
                else:
                    self.packets_link_down[stream] += 1
            elif (entry := self._callbacks.get(stream)) is not None:  # a real sensor only notifies subscribers
                callback, wants_arrival = entry
                if wants_arrival:
                    callback(note.payload, None if self.realtime else start_ns + round(note.deliver_s * 1e9))
                else:
                    callback(note.payload)
                if stream == "status":
                    self.status_sent += 1
                else:
                    self.packets_sent[stream] += 1
                    self.samples_sent[stream] += note.count
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
