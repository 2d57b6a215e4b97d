"""Clock map: drift-aware lower-envelope fit under BLE jitter; continuous, increasing frame times;
bounded memory; reboots (clock epochs shared by a sensor's two streams)."""

from __future__ import annotations

import numpy as np

from jointmon.packets import StreamType, encode_packet
from sensor_gateway.clock_map import ClockMap, ClockSettings
from sensor_gateway.gateway import SensorDecoder

START_NS = 1_700_000_000_000_000_000
STREAMS = {StreamType.IMU: (200, 10, 6), StreamType.MIC_PCM16: (16000, 100, 1)}


def sensor_packets(duration_s: float, drift_ppm: float, jitter_ms: float, offset_us: int, seed: int = 0,
                   boot_s: float = 0.0):
    """(arrival_ns, stream, packet bytes, first sample index) of both streams of one sensor, in delivery
    order: samples on the sensor's crystal, notifications late by U(0, jitter) and never reordered."""
    rng = np.random.default_rng(seed)
    clock_rate = 1 + drift_ppm * 1e-6
    rows = []
    for stream, (rate, per, ch) in STREAMS.items():
        n_pk = int(duration_s * rate) // per
        first = np.arange(n_pk) * per
        t_send = boot_s + (first + per - 1) / (rate * clock_rate)  # true time of each packet's last sample
        t0_us = offset_us + np.rint(first * 1e6 / rate).astype(np.int64)
        for k in range(n_pk):
            data = encode_packet(stream, k, int(t0_us[k]), rate, 0x33 if ch == 6 else 0,
                                 np.zeros((per, ch), np.int16))
            rows.append((float(t_send[k]), int(stream), data, int(first[k])))
    rows.sort(key=lambda r: (r[0], r[1]))
    t = np.array([r[0] for r in rows])
    deliver = np.maximum.accumulate(t + rng.uniform(0, jitter_ms / 1000, t.size))
    return [(START_NS + round(d * 1e9), StreamType(r[1]), r[2], r[3]) for d, r in zip(deliver, rows, strict=True)]


def run(packets, decoder: SensorDecoder):
    frames = []
    for arrival, stream, data, _ in packets:
        frames += decoder.push(stream, data, arrival)
    return frames + decoder.flush()


def test_drift_and_jitter_frame_times_within_1ms_and_continuous() -> None:
    drift = 50.0
    dec = SensorDecoder("ath-001", "left_knee", "shank")
    frames = run(sensor_packets(120.0, drift, 15.0, offset_us=3_000_000_000, seed=4), dec)
    assert dec.counters["packets_decoded"] == dec.counters["packets_received"] == 120 * (20 + 160)
    for stream, (rate, _, _) in STREAMS.items():
        fs = [f for _, f in frames if f.stream == stream]
        assert sum(f.count for f in fs) == 120 * rate
        first = np.array([f.first_index for f in fs])
        t0 = np.array([f.t0_ns for f in fs], dtype=np.int64)
        truth = START_NS + np.rint(first / (rate * (1 + drift * 1e-6)) * 1e9).astype(np.int64)
        err_ms = np.abs(t0 - truth) / 1e6
        assert err_ms.max() < 1.0, (stream, err_ms.max())
        # Continuous and increasing: consecutive frames are their nominal length apart to within the
        # fitted drift plus the bounded slew (500 ppm), and every sample time is later than the previous.
        step = np.diff(t0) - np.diff(first) * 1e9 / rate
        assert np.abs(step).max() < 50e6 * (1000e-6 + 100e-6) + 1_000
        last_of_prev = t0[:-1] + np.rint((np.diff(first) - 1) * 1e9 / rate)
        assert np.all(t0[1:] > last_of_prev)
    assert abs(dec.clock.drift_ppm - drift) < 3.0


def test_fit_memory_is_bounded() -> None:
    clock = ClockMap(ClockSettings(window_s=4.0, history_s=2.0))
    rng = np.random.default_rng(1)
    for k in range(20_000):  # 200 s of 10 ms observations, frames read as they go
        tau_us = k * 10_000
        clock.observe(tau_us, START_NS + tau_us * 1000 + int(rng.uniform(0, 5e6)))
        if k % 5 == 0:
            clock.to_wall_ns(tau_us * 1000 - 20_000_000)
    fit = clock._fits[clock.epoch]
    assert len(fit.buckets) <= 8 and len(fit.pieces) <= 2 * (2.0 / 0.5) + 4


def test_published_times_never_change_and_increase() -> None:
    clock = ClockMap()
    rng = np.random.default_rng(2)
    seen: dict[int, int] = {}
    prev = None
    for k in range(3000):  # 30 s; the fit changes under the reads all the time
        tau_us = k * 10_000
        clock.observe(tau_us, START_NS + round(tau_us * 1000 * (1 - 80e-6)) + int(rng.exponential(4e6)))
        if k > 100 and k % 7 == 0:
            q = tau_us * 1000 - 30_000_000
            w = clock.to_wall_ns(q)
            if prev is not None:
                assert w > prev
            prev = w
            seen[q] = w
    for q, w in list(seen.items())[-50:]:
        assert clock.to_wall_ns(q) == w  # a published time is never rewritten


def test_reboot_one_new_epoch_for_both_streams() -> None:
    before = sensor_packets(10.0, 30.0, 10.0, offset_us=7_000_000, seed=5)
    after = sensor_packets(6.0, 30.0, 10.0, offset_us=0, seed=6, boot_s=11.0)
    dec = SensorDecoder("ath-001", "left_knee", "shank")
    frames = run(before + after, dec)
    assert dec.clock.epoch == 1  # both streams restarted, the clock was re-anchored once
    assert dec.stream_counters()["restarts"] == 2
    gaps = dec.take_gaps()
    assert sorted(g.stream for _, g in gaps) == [StreamType.IMU, StreamType.MIC_PCM16]
    for _, g in gaps:
        assert g.reason == "reboot" and abs(g.duration_s - 1.0) < 0.003  # 10 s of samples, back at 11 s
    for stream, (rate, _, _) in STREAMS.items():
        fs = [f for _, f in frames if f.stream == stream]
        restart = next(i for i, f in enumerate(fs) if i and f.first_index == 0)
        truth_new = START_NS + round(11.0 * 1e9)
        assert abs(fs[restart].t0_ns - truth_new) < 1_000_000
        t0 = np.array([f.t0_ns for f in fs[:restart]])
        truth = START_NS + np.array([f.first_index for f in fs[:restart]]) / (rate * (1 + 30e-6)) * 1e9
        assert np.abs(t0 - truth).max() < 1e6  # frames before the reboot keep the old epoch's clock
