"""The gateway's data path end to end through the real Mosquitto: 8 simulated sensors (4 athletes x
thigh + shank, two of them on ADPCM) for 60 s at full rates under drift and BLE jitter: every sample
arrives, in order, within 2 ms of the truth; disconnect/reconnect and a reboot are reported as gap
records of the right length, and streaming resumes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from urllib.parse import urlparse

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from firmware_sim.link_faults import REBOOT_OUTAGE_S, LinkFaults
from firmware_sim.peripheral import SimulatedPeripheral, _boot_samples
from firmware_sim.session import SimulatedSession, simulate_squat_session
from jointmon import adpcm
from jointmon.config import MqttSettings
from jointmon.frames import FLAG_GAP_BEFORE, Frame, Gap, decode_frame
from jointmon.topics import DATA_SUBSCRIPTION, GAPS_SUBSCRIPTION, parse_data_topic, parse_gaps_topic
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.sim_link import SimLink

RATES = {"imu": 200, "mic": 16000}
TOLERANCE_NS = 2_000_000  # the bar: 2 ms


class Subscriber:
    """A plain paho subscriber on the data and gaps topics, keeping payloads per topic in arrival order."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.messages: dict[str, list[bytes]] = defaultdict(list)
        self.count = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-data-path-sub")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()
        self.client.subscribe([(DATA_SUBSCRIPTION, 1), (GAPS_SUBSCRIPTION, 1)])
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.messages[msg.topic].append(msg.payload)
        self.count += 1

    def wait_for(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def frames(self, athlete: str, sensor: str, stream: str) -> list[Frame]:
        return [decode_frame(p) for t, ps in self.messages.items() if "/data/" in t
                and (d := parse_data_topic(t)).athlete == athlete and d.sensor == sensor and d.stream == stream
                for p in ps]

    def gaps(self, athlete: str, sensor: str, stream: str) -> list[Gap]:
        return [Gap.from_json(p) for t, ps in self.messages.items() if "/gaps/" in t
                and (d := parse_gaps_topic(t)).athlete == athlete and d.sensor == sensor and d.stream == stream
                for p in ps]


class CountingPublisher(MqttPublisher):
    """Counts what it was given, so the test knows how many messages to wait for."""

    given = 0

    def publish_frame(self, topic, frame) -> None:  # noqa: ANN001 - the FramePublisher protocol's types
        self.given += 1
        super().publish_frame(topic, frame)

    def publish_gap(self, topic, gap) -> None:  # noqa: ANN001
        self.given += 1
        super().publish_gap(topic, gap)


def stream_sensors(mosquitto, peripherals: dict[tuple[str, str], SimulatedPeripheral]) -> Subscriber:
    sub = Subscriber(mosquitto.url)
    publisher = CountingPublisher(MqttSettings.from_url(mosquitto.url), "gw-datapath")
    publisher.start()
    start_ns = time.time_ns()
    for p in peripherals.values():
        p.start_wall_ns = start_ns  # one session clock: truth is start + session time
    gateway = Gateway(publisher, [SensorBinding(SimLink(p), athlete, "left_knee", sensor)
                                  for (athlete, sensor), p in peripherals.items()])
    asyncio.run(gateway.run())
    assert publisher.wait_acked(30)
    sub.wait_for(publisher.given)
    publisher.stop()
    sub.stop()
    assert sub.count == publisher.given
    c = gateway.counters
    assert c["packets_received"] == c["packets_decoded"] == sum(sum(p.packets_sent.values())
                                                                 for p in peripherals.values())
    return sub


def taken_samples(p: SimulatedPeripheral, stream: str) -> tuple[np.ndarray, np.ndarray]:
    """What one boot-less sensor sampled: (values as the gateway must publish them, true Unix ns)."""
    sig, f = p.signals, p.faults
    raw = sig.imu_raw.reshape(-1, 6) if stream == "imu" else sig.mic_raw.reshape(-1, 1)
    rate = RATES[stream]
    idx = _boot_samples(raw.shape[0], rate, 0.0, np.inf, f.clock_rate)
    values = raw[idx]
    if stream == "mic" and f.mic_codec == "ima_adpcm":  # lossy on the air: the gateway publishes the decoded audio
        values = adpcm.decode(adpcm.encode(values[:, 0])[0], len(idx))[0].reshape(-1, 1)
    truth = p.start_wall_ns + np.rint(np.arange(len(idx)) / (rate * f.clock_rate) * 1e9).astype(np.int64)
    return values, truth


@pytest.fixture(scope="module")
def sim60() -> SimulatedSession:
    return simulate_squat_session(60.0, seed=11, n_clicks=3)


def test_eight_sensors_60s_every_sample_in_order_within_2ms(mosquitto, sim60: SimulatedSession) -> None:
    rng = np.random.default_rng(5)
    peripherals = {}
    for a in range(4):
        for s, sensor in enumerate(("thigh", "shank")):
            faults = LinkFaults(clock_drift_ppm=float(rng.choice([-50.0, 50.0]) * rng.uniform(0.5, 1.0)),
                                jitter_ms=15.0, clock_offset_us=int(rng.integers(0, 2**32)),
                                mic_codec="ima_adpcm" if a == 3 else "pcm16")
            peripherals[(f"ath-{a:03d}", sensor)] = SimulatedPeripheral(
                sim60.sensors[sensor], address=f"SIM:{a}{s}", name=f"JM-{a}-{sensor}", realtime=False,
                faults=faults, seed=a)
    t = time.monotonic()
    sub = stream_sensors(mosquitto, peripherals)
    worst_ns = 0
    for (athlete, sensor), p in peripherals.items():
        for stream in RATES:
            frames = sub.frames(athlete, sensor, stream)
            values, truth = taken_samples(p, stream)
            assert [f.frame_seq for f in frames] == list(range(len(frames)))  # in order, none lost
            assert all(f.flags & FLAG_GAP_BEFORE == 0 for f in frames)
            got = np.concatenate([f.samples for f in frames])
            assert got.shape[0] == values.shape[0] and np.array_equal(got, values)  # every sample, exactly
            first = np.array([f.first_index for f in frames])
            assert np.array_equal(first, np.cumsum([0] + [f.count for f in frames[:-1]]))
            times = np.concatenate([f.sample_times_ns() for f in frames])
            assert np.all(np.diff(times) > 0)
            err = np.abs(times - truth)
            worst_ns = max(worst_ns, int(err.max()))
            assert err.max() < TOLERANCE_NS, (athlete, sensor, stream, err.max() / 1e6)
    print(f"\n8 sensors x 60 s: worst sample timestamp error {worst_ns / 1e6:.3f} ms, "
          f"{time.monotonic() - t:.1f} s wall")


def _lost_samples(p: SimulatedPeripheral, stream: str) -> int:
    return sum(n.count for n in p._schedule if n.stream == stream and n.lost == "link_down")


def test_disconnect_and_reboot_are_gap_records_of_the_right_length(mosquitto) -> None:
    sim = simulate_squat_session(20.0, seed=3, n_clicks=0)
    reboot_s = 9.0
    common = {"clock_drift_ppm": 40.0, "jitter_ms": 10.0}
    peripherals = {
        ("ath-001", "thigh"): SimulatedPeripheral(sim.sensors["thigh"], address="A", name="A", realtime=False,
                                                  faults=LinkFaults(disconnects=((6.0, 2.5),), **common)),
        ("ath-001", "shank"): SimulatedPeripheral(sim.sensors["shank"], address="B", name="B", realtime=False,
                                                  faults=LinkFaults(reboot_at_s=reboot_s, clock_offset_us=77_000_000,
                                                                    mic_codec="ima_adpcm", **common)),
    }
    sub = stream_sensors(mosquitto, peripherals)
    dis, reb = peripherals[("ath-001", "thigh")], peripherals[("ath-001", "shank")]
    for stream, rate in RATES.items():
        # Disconnect: exactly the samples of the packets lost while the link was down, ~2.5 s.
        (gap,) = sub.gaps("ath-001", "thigh", stream)
        assert gap.reason == "lost" and gap.samples == _lost_samples(dis, stream)
        assert abs(gap.duration_ns - gap.samples / (rate * (1 + 40e-6)) * 1e9) < TOLERANCE_NS
        assert abs(gap.duration_s - 2.5) < 0.1
        frames = sub.frames("ath-001", "thigh", stream)
        resumed = next(f for f in frames if f.flags & FLAG_GAP_BEFORE)
        assert (resumed.frame_seq, resumed.first_index) == (gap.frame_seq, gap.first_index)
        assert gap.t_start_ns + gap.duration_ns == resumed.t0_ns
        assert frames[-1].first_index + frames[-1].count == dis.samples_taken[stream]  # streamed to the end
        # Reboot: the sensor was off REBOOT_OUTAGE_S plus the packet that died with it.
        (gap,) = sub.gaps("ath-001", "shank", stream)
        frames = sub.frames("ath-001", "shank", stream)
        restart = next(i for i, f in enumerate(frames) if f.flags & FLAG_GAP_BEFORE)
        n_before = sum(f.count for f in frames[:restart])
        true_start = n_before / (rate * (1 + 40e-6))  # session time of the first sample never sent
        true_end = reboot_s + REBOOT_OUTAGE_S
        assert gap.reason == "reboot" and frames[restart].first_index == 0
        assert abs(gap.duration_ns - (true_end - true_start) * 1e9) < TOLERANCE_NS
        assert abs(gap.samples - (true_end - true_start) * rate) <= TOLERANCE_NS * rate / 1e9 + 1
        assert abs(frames[restart].t0_ns - (reb.start_wall_ns + true_end * 1e9)) < TOLERANCE_NS
        assert abs(sum(f.count for f in frames[restart:]) - (20.0 - true_end) * rate * (1 + 40e-6)) <= 1  # to the end
