"""Stream assembler: frames, sequence gaps, stale packets, timestamp wrap, restarts."""

import numpy as np

from jointmon.frames import FLAG_GAP_BEFORE
from jointmon.packets import StreamType, decode_packet, encode_packet
from sensor_gateway.clock_map import ClockMap
from sensor_gateway.stream_assembler import StreamAssembler

RATE = 16000
PER_PACKET = 100
ARRIVAL = 1_700_000_000_000_000_000


def mic_packets(n_packets: int, t_start_us: int = 0, seq_start: int = 0):
    """(seq, packet) pairs of consecutive mic packets carrying the sample index as value."""
    out = []
    for k in range(n_packets):
        first = k * PER_PACKET
        samples = ((np.arange(first, first + PER_PACKET)) % 30000).astype(np.int16)
        t0 = t_start_us + (first * 1_000_000) // RATE
        out.append(decode_packet(encode_packet(StreamType.MIC_PCM16, seq_start + k, t0, RATE, 0, samples)))
    return out


def push_all(asm: StreamAssembler, packets) -> list:
    frames = []
    for p in packets:
        frames += asm.push(p, ARRIVAL)
    return frames + asm.flush()


def test_frames_are_50ms_and_lossless():
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    frames = push_all(asm, mic_packets(40))  # 4000 samples = 5 frames of 800
    assert [f.count for f in frames] == [800] * 5
    assert [f.first_index for f in frames] == [0, 800, 1600, 2400, 3200]
    assert [f.frame_seq for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.concatenate([f.samples[:, 0] for f in frames]), np.arange(4000))
    # Frame times follow the sensor clock: 50 ms apart exactly, whatever the arrival times.
    assert np.all(np.diff([f.t0_ns for f in frames]) == 50_000_000)
    assert all(f.flags == 0 for f in frames)


def test_lost_packets_become_an_explicit_gap():
    packets = mic_packets(40)
    kept = packets[:10] + packets[13:]  # packets 10, 11, 12 lost in the air
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    frames = push_all(asm, kept)
    assert asm.counters["lost_packets"] == 3
    assert asm.counters["gap_samples"] == 300
    assert sum(f.count for f in frames) == 3700
    gap_frames = [f for f in frames if f.flags & FLAG_GAP_BEFORE]
    assert len(gap_frames) == 1 and gap_frames[0].first_index == 1300
    # No sample moved: every sample still sits at its own index.
    for f in frames:
        np.testing.assert_array_equal(f.samples[:, 0], np.arange(f.first_index, f.first_index + f.count))


def test_duplicate_and_stale_packets_are_dropped_and_counted():
    packets = mic_packets(10)
    order = packets[:5] + [packets[4], packets[2]] + packets[5:]
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    frames = push_all(asm, order)
    assert asm.counters["stale_seq"] == 2
    assert sum(f.count for f in frames) == 1000


def test_sequence_and_timestamp_wrap_are_continuous():
    # Start just below both wraps: u16 sequence and u32 microsecond clock.
    start_us = (1 << 32) - 20_000
    packets = mic_packets(20, t_start_us=start_us, seq_start=65530)
    assert packets[-1].seq < packets[0].seq and packets[-1].t0_us < packets[0].t0_us
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    frames = push_all(asm, packets)
    assert asm.counters["lost_packets"] == 0 and asm.counters["gap_samples"] == 0
    assert asm.counters["restarts"] == 0
    assert sum(f.count for f in frames) == 2000


def test_sensor_reboot_restarts_the_stream():
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    first = mic_packets(16, t_start_us=5_000_000, seq_start=400)
    after = mic_packets(8, t_start_us=0, seq_start=0)  # clock and sequence back to zero
    frames = push_all(asm, first + after)
    assert asm.counters["restarts"] == 1
    assert sum(f.count for f in frames) == 2400
    assert frames[-1].flags & FLAG_GAP_BEFORE
    assert np.all(np.diff([f.frame_seq for f in frames]) == 1)  # subscribers still see no frame loss


def test_clock_map_takes_the_fastest_packet_not_the_first():
    clock = ClockMap()
    asm = StreamAssembler(StreamType.MIC_PCM16, clock)
    p = mic_packets(8, t_start_us=123_456)
    delays_ms = [9, 4, 12, 1, 7, 3, 15, 6]  # BLE delivery delays: packet 3 came through (nearly) at once
    frames = []
    for pkt, d in zip(p, delays_ms, strict=True):
        last_us = pkt.t0_us + round(99 * 1e6 / RATE)
        frames += asm.push(pkt, ARRIVAL + last_us * 1000 + d * 1_000_000)
    frames += asm.flush()
    # The lower envelope of (arrival - sensor time): the 1 ms packet, not the first one (9 ms).
    assert clock.offset_ns == ARRIVAL + 1_000_000
    assert frames[0].t0_ns == ARRIVAL + 1_000_000 + 123_456_000


def test_reboot_reanchors_the_clock():
    clock = ClockMap()
    asm = StreamAssembler(StreamType.MIC_PCM16, clock)
    before = mic_packets(16, t_start_us=5_000_000, seq_start=400)
    after = mic_packets(8, t_start_us=0, seq_start=0)
    frames = []
    for p in before:
        frames += asm.push(p, ARRIVAL)
    later = ARRIVAL + 3_000_000_000  # the sensor came back 3 s later with its clock at zero
    for p in after:
        frames += asm.push(p, later)
    frames += asm.flush()
    # The frames after the reboot are placed at the time they arrived, not 5 s in the past: all 8
    # packets (50 ms of samples) arrived at once, so the first sample is 50 ms before that.
    assert frames[-1].flags & FLAG_GAP_BEFORE or frames[-2].flags & FLAG_GAP_BEFORE
    restarted = [f for f in frames if f.first_index == 0][-1]
    assert abs(restarted.t0_ns - (later - 49_938_000)) < 1_000
    # ... and the reboot is reported as a gap ending there.
    gaps = asm.take_gaps()
    assert [g.reason for g in gaps] == ["reboot"] and gaps[0].t_start_ns + gaps[0].duration_ns == restarted.t0_ns


def test_reboot_of_a_sensor_up_past_half_the_clock_range_restarts_at_once():
    # Up > 2^31 us (36 min): the restarted clock (0) read through the u32 unwrap looks ahead of the old one, not
    # back; with the sequence back too it is a reboot, not stale packets to drop until the clock passes old - 2^31.
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    first = mic_packets(16, t_start_us=2_151_641_884, seq_start=400)
    after = mic_packets(8, t_start_us=0, seq_start=0)
    frames = push_all(asm, first + after)
    assert asm.counters["restarts"] == 1 and asm.counters["stale_seq"] == 0
    assert sum(f.count for f in frames) == 2400
    assert [f.first_index for f in frames if f.flags & FLAG_GAP_BEFORE] == [0]


def test_stale_packet_with_a_wrapped_clock_is_still_stale():
    # Across the u32 clock wrap a re-ordered packet stays behind the newest one: dropped, no restart.
    packets = mic_packets(20, t_start_us=(1 << 32) - 20_000, seq_start=100)
    asm = StreamAssembler(StreamType.MIC_PCM16, ClockMap())
    frames = push_all(asm, packets[:15] + [packets[3]] + packets[15:])
    assert asm.counters["stale_seq"] == 1 and asm.counters["restarts"] == 0
    assert sum(f.count for f in frames) == 2000
