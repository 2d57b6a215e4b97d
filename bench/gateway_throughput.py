"""Gateway throughput: decode + clock + frame assembly + publish of one gateway process.

    python bench/gateway_throughput.py [--sensors 16] [--seconds 20] [--mic-codec pcm16|adpcm] [--mqtt URL]

Prepares the notifications of ``--sensors`` sensors streaming ``--seconds`` of session at real rates
(200 Hz IMU in 10-sample packets, 16 kHz microphone in 100-sample PCM16 or 200-sample IMA ADPCM
packets, 15 ms delivery jitter, drift), then pushes them through the gateway's receive path
(:class:`sensor_gateway.gateway.SensorDecoder`, as the live gateway does per notification) as fast
as one core goes, and publishes every frame: encoded into a discarding sink by default, or to a real
broker with ``--mqtt`` (the paho network thread's CPU counts too: process CPU time is measured).

Prints packets/s, the CPU time per second of one streaming sensor (its CPU share at real rates),
and how many such sensors one core carries at 25 % CPU (the issue's target: >= 16).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jointmon.frames import Frame, Gap, encode_frame  # noqa: E402 - after the path set-up
from jointmon.packets import StreamType, encode_adpcm_packet, encode_packet  # noqa: E402
from jointmon.topics import DataTopic  # noqa: E402
from sensor_gateway.gateway import SensorDecoder  # noqa: E402

START_NS = 1_700_000_000_000_000_000
TARGET_SENSORS, TARGET_CPU = 16, 0.25


def sensor_notifications(k: int, seconds: float, codec: str) -> list[tuple[int, StreamType, bytes]]:
    """(arrival ns, stream, payload) of one sensor in delivery order: real rates, drift, 15 ms jitter."""
    rng = np.random.default_rng(k)
    drift = 1 + rng.uniform(-50, 50) * 1e-6
    offset_us = int(rng.integers(0, 2**31))
    rows: list[tuple[float, int, bytes]] = []
    imu = rng.integers(-3000, 3000, (int(seconds * 200), 6)).astype(np.int16)
    for i in range(0, imu.shape[0] - 9, 10):
        rows.append(((i + 9) / (200 * drift), 1, encode_packet(StreamType.IMU, i // 10, offset_us + i * 5000, 200,
                                                               0x33, imu[i:i + 10])))
    t = np.arange(int(seconds * 16000)) / 16000
    mic = (2000 * np.sin(2 * np.pi * 150 * t) + rng.normal(0, 400, t.size)).astype(np.int16)
    per = 200 if codec == "adpcm" else 100
    state = (0, 0)
    for n, i in enumerate(range(0, mic.size - per + 1, per)):
        t0_us = offset_us + round(i * 1e6 / 16000)
        if codec == "adpcm":
            data, state = encode_adpcm_packet(n, t0_us, 16000, mic[i:i + per], state)
        else:
            data = encode_packet(StreamType.MIC_PCM16, n, t0_us, 16000, 0, mic[i:i + per])
        rows.append(((i + per - 1) / (16000 * drift), 2, data))
    rows.sort(key=lambda r: (r[0], r[1]))
    send = np.array([r[0] for r in rows])
    deliver = np.maximum.accumulate(send + rng.uniform(0, 0.015, send.size))
    return [(START_NS + round(d * 1e9), StreamType(r[1]), r[2]) for d, r in zip(deliver, rows, strict=True)]


class NullPublisher:
    """Encodes every frame (the publisher's own CPU work) and drops it."""

    def __init__(self) -> None:
        self.frames = self.bytes = 0

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        str(topic)
        self.bytes += len(encode_frame(frame))
        self.frames += 1

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        gap.to_json()

    def wait_acked(self, timeout_s: float = 30.0) -> bool:
        return True

    def stop(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sensors", type=int, default=16, help="streaming sensors [%(default)s]")
    p.add_argument("--seconds", type=float, default=20.0, help="session seconds per sensor [%(default)s]")
    p.add_argument("--mic-codec", choices=("pcm16", "adpcm"), default="pcm16", help="microphone encoding [%(default)s]")
    p.add_argument("--mqtt", metavar="URL", help="publish to this broker (e.g. mqtt://127.0.0.1:1883) instead of "
                                                 "a discarding sink")
    args = p.parse_args(argv)
    if args.sensors < 1 or args.seconds < 3:
        p.error("--sensors >= 1 and --seconds >= 3 (the clock fit settles after 2 s)")

    print(f"preparing {args.sensors} sensors x {args.seconds:g} s ({args.mic_codec} microphone) ...", flush=True)
    streams = [sensor_notifications(k, args.seconds, args.mic_codec) for k in range(args.sensors)]
    # Interleave the sensors by arrival time, as one gateway sees them.
    merged = sorted(((a, k, s, d) for k, notes in enumerate(streams) for a, s, d in notes), key=lambda r: r[0])
    if args.mqtt:
        from jointmon.config import MqttSettings
        from sensor_gateway.mqtt_publisher import MqttPublisher

        publisher = MqttPublisher(MqttSettings.from_url(args.mqtt), "gw-bench")
        publisher.start()
    else:
        publisher = NullPublisher()
    decoders = [SensorDecoder(f"ath-{k:03d}", "left_knee", "shank") for k in range(args.sensors)]

    cpu0, wall0 = time.process_time(), time.perf_counter()
    for arrival, k, stream, data in merged:
        dec = decoders[k]
        frames = dec.push(stream, data, arrival)
        for topic, gap in dec.take_gaps():
            publisher.publish_gap(topic, gap)
        for topic, frame in frames:
            publisher.publish_frame(topic, frame)
    for dec in decoders:
        for topic, frame in dec.flush():
            publisher.publish_frame(topic, frame)
    acked = publisher.wait_acked(120)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    publisher.stop()

    n = len(merged)
    rejected = sum(v for d in decoders for key, v in d.counters.items() if key.startswith("rejected_"))
    sensor_seconds = args.sensors * args.seconds
    cpu_share = cpu / sensor_seconds  # CPU seconds per second of one streaming sensor
    print(f"packets:            {n} ({n / sensor_seconds:.0f} per sensor-second), rejected {rejected}"
          + ("" if acked else "  (NOT all acknowledged by the broker)"))
    print(f"throughput:         {n / wall:,.0f} packets/s wall, {n / cpu:,.0f} packets/s per CPU second")
    print(f"CPU per sensor:     {100 * cpu_share:.2f} % of one core at real rates "
          f"(16 kHz mic + 200 Hz IMU, {args.mic_codec})")
    print(f"{TARGET_SENSORS} sensors:         {100 * TARGET_SENSORS * cpu_share:.1f} % of one core "
          f"(target < {100 * TARGET_CPU:.0f} %): {'PASS' if TARGET_SENSORS * cpu_share < TARGET_CPU else 'FAIL'}")
    print(f"sensors at 25 %:    {TARGET_CPU / cpu_share:.0f} per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
