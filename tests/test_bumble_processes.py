"""Sensors and gateway in two processes, as ``jointmon simulate --virtual-ble`` and ``jointmon gateway --backend
bumble`` run them: the sensors' process serves the gateway's virtual controller as HCI over TCP, the gateway
opens it like any HCI transport (``tcp-client:HOST:PORT``, where a dongle would be ``usb:0``); when that
controller goes away, the gateway stops with a clear error."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from firmware_sim.session import simulate_squat_session
from jointmon.config import MqttSettings
from jointmon.errors import LinkError
from jointmon.processes import free_port
from sensor_gateway.bumble_backend import run_bumble_gateway, scan_bumble
from sensor_gateway.config import load_gateway_config
from sensor_gateway.mqtt_publisher import MqttPublisher

SENSORS = """
import asyncio, json, sys
from firmware_sim.bumble_virtual import gateway_config_toml, run_virtual_ble_sensors
from firmware_sim.session import simulate_squat_session

sim = simulate_squat_session(6.0, seed=5, n_clicks=1)
def ready(sensors):
    print(json.dumps({"config": gateway_config_toml(sensors, sim, mqtt_url=sys.argv[2])}), flush=True)
async def linger(run):  # report, and keep the radio and the HCI port up until the gateway is done
    print(json.dumps({"counters": run.counters, "lost": run.lost}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
asyncio.run(run_virtual_ble_sensors(sim, hci_spec=f"tcp-server:127.0.0.1:{sys.argv[1]}", on_ready=ready,
                                    start_timeout_s=60.0, linger=linger))
"""


def test_sensors_and_gateway_in_two_processes(mosquitto, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SENSORS, str(port), mosquitto.url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        config = tmp_path / "gateway.toml"
        config.write_text(json.loads(proc.stdout.readline())["config"])
        cfg = load_gateway_config(config)
        assert [s.match for s in cfg.sensors] == ["JM-SHANK-01", "JM-THIGH-02"]
        hci = f"tcp-client:127.0.0.1:{port}"

        ads = asyncio.run(scan_bumble(hci, 1.0))  # --scan, over the same TCP HCI port
        assert {a.name for a in ads} == {"JM-SHANK-01", "JM-THIGH-02"} and all(a.battery_pct == 100 for a in ads)

        publisher = MqttPublisher(MqttSettings.from_url(mosquitto.url), cfg.gateway_id)
        publisher.start()
        done: dict = {}

        async def gateway() -> None:
            task = asyncio.create_task(run_bumble_gateway(cfg, publisher, hci))
            line = await asyncio.to_thread(proc.stdout.readline)  # the sensors' sessions are over
            done.update(json.loads(line))
            await asyncio.sleep(0.5)  # the last links went down with the sensors: their frames are flushed
            proc.stdin.close()  # the radio's process ends: the gateway's controller is gone, and so is the gateway
            with pytest.raises(LinkError, match="lost"):
                await asyncio.wait_for(task, 10.0)

        t0 = time.monotonic()
        asyncio.run(gateway())
        assert time.monotonic() - t0 < 20  # 6 s of session, no HCI command timing out
        publisher.wait_acked()
        publisher.stop()
    finally:
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=10)
    sim = simulate_squat_session(6.0, seed=5, n_clicks=1)
    generated = sum(sig.imu_raw.shape[0] + sig.mic_raw.shape[0] for sig in sim.sensors.values())
    assert publisher.counters["samples_published"] == generated, done["lost"]
    for name, c in done["counters"].items():
        assert c["notified_mic"] == 960 and c["notified_imu"] == 120, name  # 6 s: 160 + 20 packets/s
