"""The gateway and the analysis on bad input, through the real Mosquitto: counted drops, no crash."""

import asyncio
import time

import numpy as np
import paho.mqtt.client as mqtt

from analysis.mqtt_service import AnalysisService
from analysis.results_store import SqliteResults
from firmware_sim.session import simulate_squat_session
from jointmon.config import MqttSettings
from jointmon.frames import encode_frame
from jointmon.live_session import make_peripherals
from jointmon.messages import Status
from jointmon.topics import DataTopic, status_topic
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.link import NotifyCallback
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.sim_link import SimLink


class CorruptingLink(SimLink):
    """The simulated link with a noisy radio: every ``every``-th notification of each stream is
    damaged by ``damage`` before the gateway sees it."""

    def __init__(self, peripheral, damage, every: int = 17) -> None:
        super().__init__(peripheral)
        self.damage, self.every = damage, every
        self.damaged: dict[str, int] = {}
        self.damaged_samples = 0

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        count = 0

        def noisy(data: bytes) -> None:
            nonlocal count
            count += 1
            if count % self.every == 0:
                self.damaged[char_uuid] = self.damaged.get(char_uuid, 0) + 1
                self.damaged_samples += data[10]  # the packet's sample count (header byte 10)
                data = self.damage(data)
            callback(data)

        await super().start_notify(char_uuid, noisy)


def flip_bit(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x10
    return bytes(b)


def truncate(data: bytes) -> bytes:
    """Cut inside the header. (A packet cut later is caught by its CRC and counted as bad_crc.)"""
    return data[: 3 + len(data) % 9]


def run_gateway(mqtt_settings, links_and_names, sim):
    publisher = MqttPublisher(mqtt_settings, "gw-test")
    publisher.start()
    gateway = Gateway(publisher, [SensorBinding(link, sim.athlete, sim.joint, name) for link, name in links_and_names])
    asyncio.run(gateway.run())
    assert publisher.wait_acked(30)
    publisher.stop()
    return gateway, publisher


def test_corrupt_and_truncated_packets_are_counted_and_never_published(mosquitto):
    sim = simulate_squat_session(5.0, seed=11)
    peripherals = make_peripherals(sim, realtime=False)
    thigh = CorruptingLink(peripherals["thigh"], flip_bit)
    shank = CorruptingLink(peripherals["shank"], truncate)
    gateway, publisher = run_gateway(MqttSettings.from_url(mosquitto.url), [(thigh, "thigh"), (shank, "shank")], sim)

    generated = sum(s.imu_raw.shape[0] + s.mic_raw.shape[0] for s in sim.sensors.values())
    assert gateway.counters["rejected_bad_crc"] == sum(thigh.damaged.values()) > 0
    assert gateway.counters["rejected_truncated"] == sum(shank.damaged.values()) > 0
    # Every sample is either published or inside a counted, rejected packet: nothing silent.
    lost = thigh.damaged_samples + shank.damaged_samples
    assert publisher.counters["samples_published"] == generated - lost
    # Each lost packet is followed by a good one (100 IMU and 800 mic packets: the last is never a
    # multiple of 17), so every lost sample shows up as an explicit gap.
    assert gateway.stream_counters()["gap_samples"] == lost
    assert gateway.stream_counters()["lost_packets"] == sum(thigh.damaged.values()) + sum(shank.damaged.values())


def test_malformed_mqtt_payloads_are_dropped_and_counted(mosquitto, tmp_path):
    settings = MqttSettings.from_url(mosquitto.url)
    store = SqliteResults(tmp_path / "r.sqlite")
    service = AnalysisService(settings, store, "s-bad")
    service.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="evil")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    topic = str(DataTopic("ath-009", "left_knee", "shank", "mic"))
    good = simulate_squat_session(2.0, seed=2)
    mic = good.sensors["shank"].mic_raw.reshape(-1, 1)
    from jointmon.frames import Frame
    from jointmon.packets import StreamType

    def frame(seq, first, n=800):
        return encode_frame(Frame(StreamType.MIC_PCM16, seq, first, time.time_ns(), 16000.0,
                                  np.array([1 / 32768]), mic[first:first + n]))

    messages = [
        (topic, b""),  # empty
        (topic, b"\x01\x02garbage"),  # truncated header
        (topic, frame(0, 0)[:-7]),  # truncated samples
        (topic, b"\x09" + frame(0, 0)[1:]),  # unknown version
        ("jointmon/v1/data/ath-009/left_knee/shank", frame(0, 0)),  # too few topic levels
        ("jointmon/v1/data/ath-009/left_knee/shank/imu", frame(0, 0)),  # mic frame on an imu topic
        (topic, frame(0, 0)),  # then good frames: the service still works
        (topic, frame(1, 800)),
        (topic, frame(1, 800)),  # duplicate
        (topic, frame(3, 2400)),  # frame 2 missing
    ]
    for t, payload in messages:
        pub.publish(t, payload, qos=1).wait_for_publish(5)
    assert service.wait_quiet(quiet_s=0.3, timeout_s=10)
    service.stop()
    pub.loop_stop()
    c = service.counters
    assert c["dropped_frame_truncated"] == 3
    assert c["dropped_frame_bad_version"] == 1
    assert c["dropped_bad_topic"] == 1
    assert c["dropped_stream_mismatch"] == 1
    assert c["dropped_duplicate_frame"] == 1
    assert c["frames_missing"] == 1
    assert c["frames"] == 3
    assert service.samples["ath-009/left_knee/shank/mic"] == 2400


def test_gateway_status_is_retained_with_last_will(mosquitto):
    settings = MqttSettings.from_url(mosquitto.url)
    publisher = MqttPublisher(settings, "gw-lw")
    publisher.start()
    # Kill the network connection without a DISCONNECT: the broker must publish the last will.
    publisher.client.socket().close()
    publisher.client.loop_stop()
    got: list[Status] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(Status.from_json(m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(status_topic("gateway", "gw-lw"), qos=1)
    sub.loop_start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (got and got[-1].state == "offline"):
        time.sleep(0.05)
    sub.loop_stop()
    assert got and got[-1].state == "offline"  # retained, so a late subscriber sees it too
