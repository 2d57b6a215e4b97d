"""Link faults of the simulated sensors (firmware_sim.link_faults) and what the gateway makes of them,
through the real Mosquitto: drops, clock drift, disconnects, reboots, battery, delivery jitter."""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter

import numpy as np
import pytest

from firmware_sim.link_faults import REBOOT_OUTAGE_S, LinkFaults, link_faults_for_sensors
from firmware_sim.peripheral import SimulatedPeripheral
from firmware_sim.session import SimulatedSession, simulate_squat_session
from jointmon.config import MqttSettings
from jointmon.errors import ConfigError
from jointmon.frames import FLAG_GAP_BEFORE, Frame
from jointmon.gatt import IMU_CHAR_UUID, MIC_CHAR_UUID, STATUS_CHAR_UUID
from jointmon.live_session import SIM_CLOCK_OFFSETS_US, make_peripherals
from jointmon.packets import StreamType, decode_packet
from jointmon.topics import DataTopic
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.link import NotifyCallback
from sensor_gateway.mqtt_publisher import MqttPublisher
from sensor_gateway.sim_link import SimLink

STREAM_OF = {StreamType.IMU: "imu", StreamType.MIC_PCM16: "mic"}


@pytest.fixture(scope="module")
def sim10() -> SimulatedSession:
    return simulate_squat_session(10.0, seed=5, n_clicks=2)


class TapLink(SimLink):
    """The simulated link, noting the last sequence number and arrival time of each stream."""

    def __init__(self, peripheral: SimulatedPeripheral) -> None:
        super().__init__(peripheral)
        self.last: dict[str, tuple[int, int | None]] = {}  # stream -> (seq, arrival_ns)

    async def start_notify(self, char_uuid: str, callback: NotifyCallback) -> None:
        def tap(data: bytes, arrival_ns: int | None = None, /) -> None:
            if char_uuid != STATUS_CHAR_UUID:
                pkt = decode_packet(data)
                self.last[STREAM_OF[pkt.stream]] = (pkt.seq, arrival_ns)
            callback(data, arrival_ns)

        await super().start_notify(char_uuid, tap)


class TeePublisher(MqttPublisher):
    """Publishes to the broker and keeps a copy of every frame."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[tuple[DataTopic, Frame]] = []

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        self.frames.append((topic, frame))
        super().publish_frame(topic, frame)


def run_through_gateway(mosquitto, sim: SimulatedSession, link: dict, status: bool = False):
    peripherals = make_peripherals(sim, realtime=False, faults=link)
    links = {name: TapLink(p) for name, p in peripherals.items()}
    publisher = TeePublisher(MqttSettings.from_url(mosquitto.url), "gw-faults")
    publisher.start()
    gateway = Gateway(publisher, [SensorBinding(lk, sim.athlete, sim.joint, name, status=status)
                                  for name, lk in links.items()])
    asyncio.run(gateway.run())
    assert publisher.wait_acked(30)
    publisher.stop()
    return gateway, publisher, peripherals, links


def frames_of(publisher: TeePublisher, sensor: str, stream: str) -> list[Frame]:
    return [f for t, f in publisher.frames if t.sensor == sensor and t.stream == stream]


# ---------------------------------------------------------------- configuration


def test_from_dict_reads_every_key() -> None:
    f = LinkFaults.from_dict({"drop_rate": 0.05, "jitter_ms": 10, "clock_drift_ppm": -30, "clock_offset_us": 5,
                              "disconnects": [[8.0, 1.5], [2.0, 1.0]], "reboot_at_s": 20,
                              "battery_start_pct": 40, "battery_drain_pct_per_h": 12.5})
    assert f.drop_rate == 0.05 and f.jitter_ms == 10.0 and f.clock_drift_ppm == -30.0 and f.clock_offset_us == 5
    assert f.disconnects == ((2.0, 1.0), (8.0, 1.5)) and f.reboot_at_s == 20.0
    assert (f.battery_start_pct, f.battery_drain_pct_per_h) == (40.0, 12.5)
    assert LinkFaults.from_dict({}) == LinkFaults() == LinkFaults.from_dict(None)
    assert not LinkFaults().active and f.active
    assert f.describe()["disconnects"] == [[2.0, 1.0], [8.0, 1.5]]


@pytest.mark.parametrize(("table", "key"), [
    ({"drop_rat": 0.1}, "drop_rat"),
    ({"drop_rate": "0.1"}, "drop_rate"),
    ({"drop_rate": True}, "drop_rate"),
    ({"drop_rate": 1.0}, "drop_rate"),
    ({"jitter_ms": -1}, "jitter_ms"),
    ({"clock_drift_ppm": float("nan")}, "clock_drift_ppm"),
    ({"clock_drift_ppm": 5000}, "clock_drift_ppm"),
    ({"clock_offset_us": 1.5}, "clock_offset_us"),
    ({"disconnects": [[1.0]]}, "disconnects"),
    ({"disconnects": [[1.0, 0.0]]}, "disconnects"),
    ({"disconnects": 3}, "disconnects"),
    ({"reboot_at_s": -1}, "reboot_at_s"),
    ({"battery_start_pct": 120}, "battery_start_pct"),
    ({"battery_drain_pct_per_h": "fast"}, "battery_drain_pct_per_h"),
])
def test_bad_tables_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        LinkFaults.from_dict(table)


def test_per_sensor_overrides() -> None:
    faults = link_faults_for_sensors({"drop_rate": 0.01, "shank": {"reboot_at_s": 3.0}}, ["shank", "thigh"])
    assert faults["thigh"] == LinkFaults(drop_rate=0.01)
    assert faults["shank"] == LinkFaults(drop_rate=0.01, reboot_at_s=3.0)
    with pytest.raises(ConfigError, match=r"\[link\.shank\] reboot_at_s"):
        link_faults_for_sensors({"shank": {"reboot_at_s": "soon"}}, ["shank"])
    with pytest.raises(ConfigError, match="knee"):  # a table for a sensor the session does not have
        link_faults_for_sensors({"knee": {"drop_rate": 0.1}}, ["shank", "thigh"])


# ---------------------------------------------------------------- faults at the gateway


def test_drop_rate_is_seeded_and_counted_by_the_gateway(sim10: SimulatedSession, mosquitto) -> None:
    link = {"drop_rate": 0.05}
    gateway, publisher, peripherals, links = run_through_gateway(mosquitto, sim10, link)
    dropped = sum(sum(p.packets_dropped.values()) for p in peripherals.values())
    total = sum(sum(p.packet_count.values()) for p in peripherals.values())
    assert 0.035 * total < dropped < 0.065 * total
    # Reproducible: the same seed drops exactly the same packets.
    again = make_peripherals(sim10, realtime=False, faults=link)
    for name, p in again.items():
        received: list[bytes] = []

        async def collect(p: SimulatedPeripheral = p, received: list[bytes] = received) -> None:
            await p.start_notify(IMU_CHAR_UUID, received.append)
            await p.start_notify(MIC_CHAR_UUID, received.append)
            await p.run()

        asyncio.run(collect())
        assert p.packets_dropped == peripherals[name].packets_dropped
        assert len(received) == sum(peripherals[name].packets_sent.values())
    # The gateway counts every dropped packet it can know about: all but a trailing run of drops.
    trailing = sum(peripherals[n].packet_count[s] - 1 - lk.last[s][0] for n, lk in links.items() for s in lk.last)
    assert gateway.stream_counters()["lost_packets"] == dropped - trailing
    assert gateway.stream_counters()["restarts"] == 0


def test_clock_drift_50ppm_over_60s() -> None:
    sim = simulate_squat_session(60.0, seed=1, n_clicks=0)
    sig = sim.sensors["shank"]
    periph = SimulatedPeripheral(sig, address="a", name="s", realtime=False, clock_offset_us=1_000,
                                 faults=LinkFaults(clock_drift_ppm=50.0))
    got: list[tuple[bytes, int]] = []

    async def main() -> None:
        periph.start_wall_ns = 1_700_000_000_000_000_000
        await periph.start_notify(IMU_CHAR_UUID, lambda d, arrival_ns: got.append((d, arrival_ns)))
        await periph.run()

    asyncio.run(main())
    pkt, arrival_ns = decode_packet(got[-1][0]), got[-1][1]
    true_s = (arrival_ns - periph.start_wall_ns) / 1e9  # the last sample's session time (no jitter)
    assert 59.99 < true_s < 60.0
    sensor_us = pkt.t0_us - 1_000 + (pkt.samples.shape[0] - 1) * 5000  # sensor clock of the last sample
    assert sensor_us - true_s * 1e6 == pytest.approx(3000.0, abs=1.0)  # 50 ppm of 60 s
    # Samples are taken on the sensor clock: a fast crystal takes 50 ppm more (here one extra IMU sample),
    # the stream stays contiguous and every sample is a session sample.
    samples = np.concatenate([decode_packet(d).samples for d, _ in got])
    assert samples.shape[0] == periph.samples_taken["imu"] == sig.imu_raw.shape[0] + 1
    idx = np.rint(np.arange(samples.shape[0]) / (1 + 50e-6)).astype(int)
    assert np.array_equal(samples, sig.imu_raw[idx])
    t0 = [decode_packet(d).t0_us for d, _ in got]
    assert set(np.diff(t0).tolist()) == {50_000}  # t0 counts sensor samples: 10 x 5000 us per packet


def test_disconnect_leaves_a_two_second_gap(sim10: SimulatedSession, mosquitto) -> None:
    gateway, publisher, peripherals, _ = run_through_gateway(mosquitto, sim10, {"disconnects": [[4.0, 2.0]]})
    for name, p in peripherals.items():
        assert p.packets_link_down["imu"] == 40 and p.packets_link_down["mic"] == 320
        assert p.link_events == [(4.0, "disconnect"), (6.0, "reconnect")] and p.packets_dropped == {"imu": 0, "mic": 0}
        for stream, rate, per_packet in (("imu", 200, 10), ("mic", 16000, 100)):
            frames = frames_of(publisher, name, stream)
            gaps = [(a, b) for a, b in zip(frames, frames[1:], strict=False) if b.flags & FLAG_GAP_BEFORE]
            assert len(gaps) == 1
            before, after = gaps[0]
            missing = after.first_index - (before.first_index + before.count)
            assert abs(missing / rate - 2.0) <= per_packet / rate
            assert after.t0_ns - before.t0_ns == pytest.approx((after.first_index - before.first_index) / rate * 1e9,
                                                               abs=1e3)
            assert frames[-1].first_index + frames[-1].count == round(sim10.duration_s * rate)  # resumed to the end
    counters = gateway.stream_counters()
    assert counters["lost_packets"] == 2 * (40 + 320) and counters["restarts"] == 0


def test_reboot_restarts_the_stream_and_streaming_resumes(sim10: SimulatedSession, mosquitto) -> None:
    reboot = 4.0
    gateway, publisher, peripherals, _ = run_through_gateway(mosquitto, sim10, {"shank": {"reboot_at_s": reboot}})
    # One restart per stream of the rebooted sensor, none on the other one.
    per_stream = {(s.binding.sensor, STREAM_OF[st]): a.counters["restarts"]
                  for s in gateway._sensors for st, a in s.decoder.assemblers.items()}
    assert per_stream == {("shank", "imu"): 1, ("shank", "mic"): 1, ("thigh", "imu"): 0, ("thigh", "mic"): 0}
    assert gateway.stream_counters()["restarts"] == 2 and gateway.stream_counters()["lost_packets"] == 0
    shank = sim10.sensors["shank"]
    for stream, raw, rate in (("imu", shank.imu_raw, 200), ("mic", shank.mic_raw.reshape(-1, 1), 16000)):
        frames = frames_of(publisher, "shank", stream)
        restart = next(i for i, f in enumerate(frames) if i and f.first_index == 0)
        assert frames[restart].flags & FLAG_GAP_BEFORE
        before = np.concatenate([f.samples for f in frames[:restart]])
        after = np.concatenate([f.samples for f in frames[restart:]])
        assert before.shape[0] <= reboot * rate and np.array_equal(before, raw[: before.shape[0]])
        # After the outage the samples continue from the session signal at the true time: ground truth holds.
        start = round((reboot + REBOOT_OUTAGE_S) * rate)
        assert np.array_equal(after, raw[start:])
        # The sensor clock restarted at 0; the gateway re-anchored it on the new packets' arrival.
        assert frames[restart].t0_ns - peripherals["shank"].start_wall_ns == pytest.approx(
            (reboot + REBOOT_OUTAGE_S) * 1e9, abs=1e3)


def test_battery_level_decreases_in_the_status(mosquitto) -> None:
    sim = simulate_squat_session(5.0, seed=2, n_clicks=0)
    link = {"battery_start_pct": 16.0, "battery_drain_pct_per_h": 3600.0}  # 1 % per second
    gateway, _, peripherals, _ = run_through_gateway(mosquitto, sim, link, status=True)
    levels = {}
    for name, p in peripherals.items():
        statuses: list[dict] = []

        async def collect(p: SimulatedPeripheral = p, statuses: list[dict] = statuses) -> None:
            p2 = SimulatedPeripheral(p.signals, address="a", name=p.name, realtime=False, faults=p.faults)
            await p2.start_notify(STATUS_CHAR_UUID, lambda d: statuses.append(json.loads(d)))
            await p2.run()

        asyncio.run(collect())
        levels[name] = [s["battery_pct"] for s in statuses]
        assert all(s["fw_version"] and s["imu_rate_hz"] == 200 for s in statuses)
    assert levels["thigh"] == levels["shank"] == [16, 15, 14, 13, 12]
    assert gateway.counters["status_received"] == 10
    assert {n: s["battery_pct"] for n, s in gateway.sensor_status().items()} == {
        p.name: 12 for p in peripherals.values()}  # low: below 15 %


def test_jitter_delays_but_never_reorders() -> None:
    sig = simulate_squat_session(2.0, seed=4, n_clicks=0).sensors["thigh"]
    plain = SimulatedPeripheral(sig, address="a", name="t", realtime=False)
    jittery = SimulatedPeripheral(sig, address="a", name="t", realtime=False, faults=LinkFaults(jitter_ms=20.0))
    arrivals: dict[str, list[int]] = {}
    for key, p in (("plain", plain), ("jitter", jittery)):
        got: list[int] = []

        async def main(p: SimulatedPeripheral = p, got: list[int] = got) -> None:
            p.start_wall_ns = 0
            await p.start_notify(IMU_CHAR_UUID, lambda _d, arrival_ns: got.append(arrival_ns))
            await p.start_notify(MIC_CHAR_UUID, lambda _d, arrival_ns: got.append(arrival_ns))
            await p.run()

        asyncio.run(main())
        arrivals[key] = got
    plain_ns, jitter_ns = np.array(arrivals["plain"]), np.array(arrivals["jitter"])
    delay = jitter_ns - plain_ns
    assert delay.min() >= 0 and delay.max() < 20e6 + 30e6  # own jitter plus waiting behind a late one
    assert np.all(np.diff(jitter_ns) >= 0) and delay.mean() > 5e6


def test_realtime_callbacks_get_no_arrival_time() -> None:
    sig = simulate_squat_session(0.5, seed=2, n_clicks=0).sensors["shank"]
    periph = SimulatedPeripheral(sig, address="a", name="s", realtime=True, speed=50.0)
    got: Counter[object] = Counter()

    async def main() -> None:
        await periph.start_notify(IMU_CHAR_UUID, lambda _d, arrival_ns: got.update([arrival_ns]))
        await periph.run()

    asyncio.run(main())
    assert got == Counter({None: 10})


def test_make_peripherals_uses_the_session_link_table(sim10: SimulatedSession) -> None:
    sim = copy.copy(sim10)
    sim.link = {"clock_offset_us": 10, "thigh": {"drop_rate": 0.2}}  # as a scenario's [link] table
    peripherals = make_peripherals(sim, realtime=False)
    assert peripherals["thigh"].faults.drop_rate == 0.2 and peripherals["shank"].faults.drop_rate == 0.0
    assert peripherals["shank"].clock_offset_us == SIM_CLOCK_OFFSETS_US["shank"] + 10
