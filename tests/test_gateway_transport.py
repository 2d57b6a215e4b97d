"""The gateway's MQTT transport through the real Mosquitto: store-and-forward across a broker outage
(zero samples lost), a restart resuming the disk queue, counted drops of a full queue, retained
per-sensor status and the last will."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import numpy as np
import paho.mqtt.client as mqtt

from firmware_sim.peripheral import SimulatedPeripheral
from firmware_sim.session import SensorSignals
from jointmon.config import MqttSettings
from jointmon.frames import Frame, decode_frame, encode_frame
from jointmon.messages import Status
from jointmon.packets import StreamType
from jointmon.topics import DATA_SUBSCRIPTION, STATUS_SUBSCRIPTION, DataTopic, status_topic
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.sim_link import SimLink


def synthetic_signals(name: str, duration_s: float, seed: int) -> SensorSignals:
    """Random raw streams: every sample distinct enough that a lost or reordered one shows."""
    rng = np.random.default_rng(seed)
    n_imu, n_mic = round(200 * duration_s), round(16000 * duration_s)
    return SensorSignals(name, 200, 16000, rng.integers(-30000, 30000, (n_imu, 6), dtype=np.int16), 0,
                         rng.integers(-30000, 30000, n_mic, dtype=np.int16))


class Collector:
    """A subscriber with a persistent session that resubscribes on every connect; keeps payloads in order."""

    def __init__(self, broker, topic: str = DATA_SUBSCRIPTION, client_id: str = "collector") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def frames(self) -> dict[str, list[Frame]]:
        """Frames per topic in arrival order, duplicates (same frame_seq again, at-least-once) removed."""
        out: dict[str, list[Frame]] = defaultdict(list)
        with self.lock:
            msgs = list(self.messages)
        for topic, payload, _ in msgs:
            frame = decode_frame(payload)
            seen = out[topic]
            if seen and frame.frame_seq <= seen[-1].frame_seq:
                continue
            seen.append(frame)
        return out

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _stream_samples(frames: list[Frame]) -> np.ndarray:
    return np.concatenate([f.samples for f in frames])


def test_broker_killed_for_20_s_mid_session_loses_no_sample(mosquitto, tmp_path):
    """Two sensors stream 25 s in real time; Mosquitto is SIGKILLed at 2.5 s and restarted on the same
    port 20 s later. Every sample reaches the subscriber, in order, bit for bit."""
    settings = MqttSettings.from_url(mosquitto.url)
    duration_s, kill_at_s, outage_s = 25.0, 2.5, 20.0
    signals = {n: synthetic_signals(n, duration_s, seed) for seed, n in enumerate(("thigh", "shank"))}
    peripherals = {n: SimulatedPeripheral(sig, address=f"SIM:{i}", name=f"JM-{n}", realtime=True)
                   for i, (n, sig) in enumerate(signals.items())}
    collector = Collector(mosquitto)
    publisher = MqttPublisher(settings, "gw-outage", queue_path=tmp_path / "q.sqlite")
    publisher.start()
    gateway = Gateway(publisher, [SensorBinding(SimLink(p), "ath-001", "left_knee", n) for n, p in peripherals.items()],
                      status_interval_s=1.0)
    # The gateway runs in a thread and the broker is killed and restarted from the test's own thread:
    # servers die with the thread that started them (PR_SET_PDEATHSIG), so never from a short-lived one.
    run = threading.Thread(target=asyncio.run, args=(gateway.run(),))
    run.start()
    time.sleep(kill_at_s)
    mosquitto.kill()
    time.sleep(outage_s - 1.0)
    during_outage = dict(publisher.health())  # the queue, seen while the broker is still away
    time.sleep(1.0)
    mosquitto.start()
    run.join(timeout=duration_s + 10)
    assert not run.is_alive()
    assert publisher.wait_acked(30)
    total = sum(s.imu_raw.shape[0] + s.mic_raw.shape[0] for s in signals.values())
    # Acknowledged by the broker is not yet delivered to the subscriber: wait for the tail to arrive.
    assert collector.wait_for(lambda: sum(f.count for fs in collector.frames().values() for f in fs) >= total, 15)
    frames = collector.frames()
    collector.close()
    publisher.stop()

    # The outage was real: ~17 s of frames (2 sensors x 2 streams x 20 frames/s) waited on disk.
    assert during_outage["frames_queued_offline"] > 2 * 2 * 20 * (outage_s - 3)
    assert during_outage["queue_frames"] > 2 * 2 * 20 * (outage_s - 3)
    assert publisher.counters["mqtt_reconnects"] >= 1
    h = publisher.health()
    assert h["queue_dropped_frames"] == 0 and h["queue_frames"] == 0
    for name, sig in signals.items():
        imu = frames[str(DataTopic("ath-001", "left_knee", name, "imu"))]
        mic = frames[str(DataTopic("ath-001", "left_knee", name, "mic"))]
        for fs in (imu, mic):  # in order, no hole: each frame starts where the previous one ended
            firsts = np.array([f.first_index for f in fs])
            ends = firsts + np.array([f.count for f in fs])
            assert firsts[0] == 0 and np.array_equal(firsts[1:], ends[:-1])
        np.testing.assert_array_equal(_stream_samples(imu), sig.imu_raw)
        np.testing.assert_array_equal(_stream_samples(mic)[:, 0], sig.mic_raw)
    assert publisher.counters["samples_published"] >= sum(s.imu_raw.shape[0] + s.mic_raw.shape[0]
                                                          for s in signals.values())


def _frame(seq: int, n: int = 100) -> Frame:
    samples = np.full((n, 1), seq % 30000, dtype=np.int16)
    return Frame(StreamType.MIC_PCM16, seq, seq * n, 1_700_000_000_000_000_000 + seq, 16000.0,
                 np.array([1 / 32768]), samples)


def test_gateway_restart_resumes_the_disk_queue_in_order(mosquitto, tmp_path):
    """Frames queued while the broker is down survive a gateway crash; the next start sends them, in order."""
    settings = MqttSettings.from_url(mosquitto.url)
    queue = tmp_path / "gw.sqlite"
    topic = DataTopic("ath-002", "right_knee", "shank", "mic")
    first = MqttPublisher(settings, "gw-restart", queue_path=queue)
    first.start()
    first.publish_frame(topic, _frame(0))
    assert first.wait_acked(10)
    mosquitto.stop()
    for seq in range(1, 301):
        first.publish_frame(topic, _frame(seq))
    time.sleep(0.3)
    assert len(first.queue) == 300 and first.counters["frames_queued_offline"] == 300
    first.abandon()  # the gateway dies with 300 frames on disk

    mosquitto.start()
    collector = Collector(mosquitto, client_id="resume-collector")
    time.sleep(0.3)
    second = MqttPublisher(settings, "gw-restart", queue_path=queue)
    assert len(second.queue) == 300 and second.queue.counters["queue_resumed_frames"] == 300
    second.start()
    second.publish_frame(topic, _frame(301))  # new frames go behind the resumed ones
    assert second.wait_acked(20)
    assert collector.wait_for(lambda: len(collector.frames().get(str(topic), [])) >= 301, 10)
    got = [f.frame_seq for f in collector.frames()[str(topic)]]
    collector.close()
    second.stop()
    assert got == list(range(1, 302))
    assert second.counters["frames_published"] == 301 and second.counters["samples_published"] == 301 * 100


def test_full_queue_drops_the_oldest_and_counts_them(mosquitto, tmp_path):
    """A 100-frame queue and 250 frames while the broker is away: the 150 oldest are dropped and
    counted (frames and samples); the newest 100 arrive when it is back."""
    settings = MqttSettings.from_url(mosquitto.url)
    topic = DataTopic("ath-003", "left_knee", "thigh", "mic")
    payload_len = len(encode_frame(_frame(0)))
    mosquitto.stop()
    pub = MqttPublisher(settings, "gw-full", queue_path=tmp_path / "q.sqlite", queue_max_bytes=100 * payload_len)
    pub.start(require_broker=False)
    for seq in range(250):
        pub.publish_frame(topic, _frame(seq))
    h = pub.health()
    assert h["queue_frames"] == 100
    assert h["queue_dropped_frames"] == 150 and h["queue_dropped_samples"] == 150 * 100
    mosquitto.start()
    collector = Collector(mosquitto, client_id="full-collector")
    time.sleep(0.3)
    assert pub.wait_acked(20)
    assert collector.wait_for(lambda: len(collector.frames().get(str(topic), [])) >= 100, 10)
    got = [f.frame_seq for f in collector.frames()[str(topic)]]
    collector.close()
    pub.stop()
    assert got == list(range(150, 250))


def test_retained_sensor_status_and_last_will(mosquitto):
    """Per-sensor status is retained (a late subscriber sees state, counters, packets/s, loss %, battery);
    killing the gateway's connection makes the broker publish its last will, retained."""
    settings = MqttSettings.from_url(mosquitto.url)
    sig = synthetic_signals("thigh", 2.0, 5)
    per = SimulatedPeripheral(sig, address="SIM:1", name="JM-T", realtime=False)
    pub = MqttPublisher(settings, "gw-status")
    pub.start()
    gateway = Gateway(pub, [SensorBinding(SimLink(per), "ath-004", "left_knee", "thigh", status=True)])
    asyncio.run(gateway.run())
    assert pub.wait_acked(10)
    time.sleep(0.5)  # the last statuses go out directly (not through the queue): let them leave
    pub.abandon()  # no clean DISCONNECT: the will must fire

    late = Collector(mosquitto, topic=STATUS_SUBSCRIPTION, client_id="late-status")
    assert late.wait_for(lambda: {t for t, _, _ in late.messages} >= {
        status_topic("sensor", "ath-004.left_knee.thigh"), status_topic("gateway", "gw-status")}, 10)
    assert late.wait_for(lambda: any(Status.from_json(p).state == "offline" for t, p, _ in late.messages
                                     if t == status_topic("gateway", "gw-status")), 10)
    late.close()
    by_topic = {t: (Status.from_json(p), retained) for t, p, retained in late.messages}
    sensor, retained = by_topic[status_topic("sensor", "ath-004.left_knee.thigh")]
    assert retained
    assert sensor.state == "stopped"  # the session ended
    assert sensor.counters["samples"] == sig.imu_raw.shape[0] + sig.mic_raw.shape[0]
    assert sensor.counters["connect_attempts"] == 1
    assert sensor.info["loss_pct"] == 0.0 and sensor.info["battery_pct"] == 100
    assert sensor.info["gateway"] == "gw-status"
    gw, _ = by_topic[status_topic("gateway", "gw-status")]
    assert gw.state == "offline"
