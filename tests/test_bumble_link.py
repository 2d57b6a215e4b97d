"""The Bluetooth link for real: firmware_sim sensors as Bumble GATT peripherals, the gateway's bleak code on the
Bumble backend, over Bumble's software controllers on a virtual link (no Bluetooth hardware needed).

The sessions without analysis run at 2x real time (the virtual radio too). The end-to-end session runs in real
time: the gateway stamps BLE notifications with its own clock (bleak passes no arrival time), so a faster session
would look like a sensor clock 2x fast, and the two sensors' clock fits, hence the cross-sensor merging of one
click heard by both, would be off. A sensor's TX ring is enlarged where a test checks that every sample arrives,
so that a busy test machine's event-loop stalls are not taken for a full radio.
"""

import asyncio

import numpy as np
import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from analysis.event_matching import match_events
from analysis.influx_sink import InfluxSink
from analysis.result_sink import FanOut
from analysis.results_store import SqliteResults
from firmware_sim.ble_peripheral import (
    CONTROL_SET_MIC_CODEC,
    CONTROL_SET_RATES,
    advertising_payloads,
    static_address,
)
from firmware_sim.bumble_virtual import VirtualBle, ble_sensors_for_session
from firmware_sim.session import simulate_squat_session
from jointmon.bumble_session import run_ble_session
from jointmon.config import InfluxSettings, MqttSettings
from jointmon.gatt import (
    BATTERY_LEVEL_CHAR_UUID,
    BATTERY_SERVICE_UUID,
    CONTROL_CHAR_UUID,
    DEVICE_INFO_SERVICE_UUID,
    IMU_CHAR_UUID,
    MIC_CHAR_UUID,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
)
from jointmon.packets import StreamType, decode_packet
from sensor_gateway.bumble_backend import BumbleCentral
from sensor_gateway.supervisor import SupervisorSettings

CLICK_TOLERANCE_S = 0.010
SPEED = 2.0
BIG_RING = 512  # packets: ~2.8 s of a sensor's session, against test-machine stalls (see the module docstring)


@pytest.fixture(scope="module")
def sim():
    return simulate_squat_session(20.0, seed=7, n_clicks=4)


def test_advertising_payload_is_protocol_section_1():
    adv, scan_rsp = advertising_payloads("JM-THIGH-01", 87, name_in_adv_data=False)
    assert len(adv) <= 31 and len(scan_rsp) <= 31  # a legacy advertisement
    assert bytes.fromhex("020106") in adv  # flags
    assert bytes.fromhex("1107 605f4e3d2c1f7a9d8e4b3e5c0100a9b6") in adv  # complete 128-bit UUID list
    assert bytes.fromhex("05ff ffff0157") in adv  # manufacturer data: company 0xFFFF, format 1, 87 %
    assert scan_rsp == bytes([12, 0x09]) + b"JM-THIGH-01"
    assert static_address("JM-THIGH-01") == static_address("JM-THIGH-01")
    assert int(str(static_address("JM-THIGH-01"))[:2], 16) & 0xC0 == 0xC0  # random static


def test_bleak_api_over_bumble(sim):
    """Scan, connect, discover, read, write, notify, control errors, disconnected callback: bleak's own API
    on the Bumble backend against the simulated sensor's GATT server."""

    async def main():
        vble = VirtualBle()
        sensors = ble_sensors_for_session(sim, vble.sensor_device, speed=4.0)
        for s in sensors.values():
            await s.start()
        central = await BumbleCentral.on_controller(vble.controller("gateway"))
        seen = {}
        async with BleakScanner(lambda d, a: seen.setdefault(d.address, (d, a)), service_uuids=[SERVICE_UUID],
                                backend=central.backend):
            await asyncio.sleep(0.5)
        names = {a.local_name: (d, a) for d, a in seen.values()}
        assert set(names) == {"JM-THIGH-02", "JM-SHANK-01"}
        device, adv = names["JM-SHANK-01"]
        assert device.address == str(static_address("JM-SHANK-01"))
        assert adv.manufacturer_data == {0xFFFF: b"\x01\x64"} and adv.rssi < 0

        gone = asyncio.Event()
        client = BleakClient(device, disconnected_callback=lambda _c: gone.set(), backend=central.backend)
        await client.connect()
        assert client.mtu_size == 247
        uuids = {s.uuid for s in client.services}
        assert {SERVICE_UUID, DEVICE_INFO_SERVICE_UUID, BATTERY_SERVICE_UUID} <= uuids
        assert "notify" in client.services.get_characteristic(IMU_CHAR_UUID).properties
        assert (await client.read_gatt_char("00002a29-0000-1000-8000-00805f9b34fb")) == b"jointmon"  # manufacturer
        assert (await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID)) == bytes([100])
        status = (await client.read_gatt_char(STATUS_CHAR_UUID)).decode()
        assert '"imu_rate_hz":200' in status and '"mic_codec":"pcm16"' in status

        with pytest.raises(BleakError, match="ATT"):  # reserved opcode: an ATT error, not a crash
            await client.write_gatt_char(CONTROL_CHAR_UUID, b"\x7f", response=True)
        with pytest.raises(BleakError):  # 3 kHz does not divide 16 kHz
            await client.write_gatt_char(CONTROL_CHAR_UUID, bytes([CONTROL_SET_RATES]) + b"\xc8\x00\xb8\x0b", True)
        await client.write_gatt_char(CONTROL_CHAR_UUID, bytes([CONTROL_SET_MIC_CODEC, 3]), response=True)
        await client.write_gatt_char(CONTROL_CHAR_UUID, bytes([CONTROL_SET_RATES]) + b"\x64\x00\x40\x1f", True)
        assert '"mic_codec":"ima_adpcm"' in (await client.read_gatt_char(STATUS_CHAR_UUID)).decode()

        packets = {IMU_CHAR_UUID: [], MIC_CHAR_UUID: []}
        for uuid, got in packets.items():
            await client.start_notify(uuid, lambda _c, data, got=got: got.append(bytes(data)))
        await client.write_gatt_char(CONTROL_CHAR_UUID, b"\x01", response=True)
        await asyncio.sleep(0.5)
        with pytest.raises(BleakError):  # the session runs: no reconfiguration
            await client.write_gatt_char(CONTROL_CHAR_UUID, bytes([CONTROL_SET_MIC_CODEC, 2]), response=True)
        await client.stop_notify(IMU_CHAR_UUID)
        n_imu = len(packets[IMU_CHAR_UUID])
        await asyncio.sleep(0.3)
        assert len(packets[IMU_CHAR_UUID]) == n_imu  # unsubscribed: no more IMU packets
        imu = [decode_packet(p) for p in packets[IMU_CHAR_UUID]]
        mic = [decode_packet(p) for p in packets[MIC_CHAR_UUID]]
        assert imu and mic and all(p.rate_hz == 100 for p in imu)
        assert all(p.stream == StreamType.MIC_PCM16 and p.rate_hz == 8000 and p.codec == "ima_adpcm" for p in mic)
        assert [p.seq for p in mic] == list(range(len(mic)))  # nothing lost in between
        shank = sensors["shank"]
        assert shank.counters["not_subscribed_imu"] > 0 and shank.counters["control_rejected"] == 3

        await shank.close()  # the sensor powers off: an unsolicited disconnect for the client
        await asyncio.wait_for(gone.wait(), 5.0)
        assert not client.is_connected
        for s in sensors.values():
            await s.close()
        await central.close()

    asyncio.run(main())


def test_ble_session_end_to_end(sim, mosquitto, influxdb1, tmp_path):
    """As tests/test_end_to_end.py over the simulated link: every sample arrives, clicks within 10 ms, angles and
    reps right, read back from InfluxDB; here through GATT notifications and the real bleak client code."""
    influx = InfluxSettings(url=influxdb1.url, api="v1", database=influxdb1.database, batch_size=2000,
                            flush_interval_s=0.2)
    sink = FanOut(SqliteResults(tmp_path / "r.sqlite"), InfluxSink(influx))
    run = run_ble_session(sim, MqttSettings.from_url(mosquitto.url), sink, "ble-1", speed=1.0,
                          bytes_per_s=175_000.0, tx_buffer_packets=BIG_RING)

    generated = sum(run.samples_generated.values())
    assert run.samples_published == generated, run.sensor_lost
    for key, n in run.samples_generated.items():
        assert run.samples_analysed[f"{sim.athlete}/{sim.joint}/{key}"] == n
    assert not {k: v for k, v in run.gateway_counters.items() if k.startswith("rejected") and v}
    assert run.gateway_counters.get("lost_packets", 0) == 0 and not run.gaps

    rows = influxdb1.rows("SELECT stream_t_s FROM joint_event WHERE \"type\" = 'click' AND session = 'ble-1'")
    truth = [lb.t_start_s for lb in sim.labels if lb.type == "click"]
    assert len(truth) == 4
    m = match_events(np.array([r["stream_t_s"] for r in rows]), np.array(truth), CLICK_TOLERANCE_S)
    assert m.missed == [] and m.false_positives == [], (m, rows)
    angle = influxdb1.rows("SELECT count(flexion_deg) AS n, max(flexion_deg) AS peak FROM joint_angle "
                           "WHERE session = 'ble-1'")[0]
    assert abs(angle["n"] - 50 * sim.duration_s) <= 2
    assert abs(angle["peak"] - max(sim.peak_flexion_deg)) < 5.0
    reps = [e for e in run.events if e.type == "rep"]
    assert len(reps) == sim.rep_count


def test_link_faults_recover(mosquitto):
    """The sensor drops the connection, goes out of range (no advertising) for 3 s, reboots, and its firmware
    stalls with the link up: the gateway's retries and silence watchdog bring every link back, and each
    outage is reported as a gap (lost packets by sequence number, or a reboot)."""
    sim = simulate_squat_session(18.0, seed=3, n_clicks=0)
    faults = {"shank": {"reboot_at_s": 12.0}, "thigh": {"disconnects": [[6.0, 3.0]]}}
    run = run_ble_session(sim, MqttSettings.from_url(mosquitto.url), None, "ble-faults", speed=SPEED, faults=faults,
                          drops_at_s={"shank": (4.0,)}, stalls_at_s={"thigh": (14.0,)}, tx_buffer_packets=BIG_RING,
                          supervisor=SupervisorSettings(backoff_initial_s=0.2, backoff_max_s=1.0, silence_s=1.0))
    g = run.gateway_counters
    assert g["link_drops"] >= 4 and g["reconnects"] >= 4  # drop, out of range, reboot, stall (+ the session end)
    assert g["watchdog_reconnects"] == 1  # the stall: connected but silent
    assert g["restarts"] == 2  # the reboot restarts both streams of the shank
    events = {seg: [e for _, e in ev] for seg, ev in run.link_events.items()}
    assert events["shank"].count("connect") == 3 and events["thigh"].count("connect") == 3

    gaps = {(t.sensor, t.stream, g.reason) for t, g in run.gaps}
    assert gaps >= {("shank", "imu", "lost"), ("shank", "mic", "lost"), ("shank", "imu", "reboot"),
                    ("shank", "mic", "reboot"), ("thigh", "imu", "lost"), ("thigh", "mic", "lost")}
    thigh_mic = sorted(g.samples / g.rate_hz for t, g in run.gaps if t.sensor == "thigh" and t.stream == "mic")
    assert thigh_mic[-1] == pytest.approx(3.2, abs=0.3)  # out of range 3 s + reconnect and START

    # Every packet the gateway reports lost the sensor counted as not sent (a few in flight at an abrupt
    # disconnect may go either way); the reboot's lost packets are a restart, not counted by sequence.
    thigh_lost = sum(n for k, n in run.sensor_lost["thigh"].items() if not k.endswith("_status"))
    thigh_gap_packets = sum(g.packets for t, g in run.gaps if t.sensor == "thigh")
    assert abs(thigh_gap_packets - thigh_lost) <= 4, (thigh_gap_packets, run.sensor_lost["thigh"])
    # Nothing else went missing: published = generated - lost (gap samples) - the shank's outage around the reboot.
    assert run.samples_published + g["gap_samples"] <= sum(run.samples_generated.values())
    assert not {k: v for k, v in g.items() if k.startswith("rejected") and v}
