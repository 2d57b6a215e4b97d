"""The gateway's shared scanner through simulated peripherals: the watchdog restarts a silent scanner once
and counts it, unknown sensors are reported and never connected, and ``--scan`` lists RSSI and battery."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from test_gateway_transport import synthetic_signals

from firmware_sim.link_faults import LinkFaults
from firmware_sim.peripheral import SimulatedPeripheral
from jointmon.gatt import ADV_COMPANY_ID, decode_adv_battery, encode_adv_data
from sensor_gateway.config import load_gateway_config
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.recorder import FrameCollector
from sensor_gateway.scanner import SensorScanner, format_scan
from sensor_gateway.sim_link import SimLink, SimScanSource

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "docs" / "gateway.example.toml"


def peripheral(name: str, address: str, duration_s: float = 1.0, battery_pct: float = 100.0,
               seed: int = 3) -> SimulatedPeripheral:
    return SimulatedPeripheral(synthetic_signals("thigh", duration_s, seed), address=address, name=name,
                               realtime=True, faults=LinkFaults(battery_start_pct=battery_pct))


def test_advertisement_battery_round_trip_and_bad_data_is_no_battery():
    assert decode_adv_battery({ADV_COMPANY_ID: encode_adv_data(87)}) == 87
    assert decode_adv_battery({ADV_COMPANY_ID: encode_adv_data(None)}) is None
    assert decode_adv_battery({ADV_COMPANY_ID: bytes([2, 50])}) is None  # a later format: skipped, not misread
    assert decode_adv_battery({ADV_COMPANY_ID: bytes([1])}) is None
    assert decode_adv_battery({0x0059: bytes([1, 50])}) is None  # another company's data


def test_scanner_watchdog_restarts_a_silent_scanner_exactly_once_and_counts_it():
    silence_s = 0.4

    async def main() -> tuple[SensorScanner, SimScanSource, dict[str, float]]:
        source = SimScanSource([peripheral("JM-T", "SIM:1")], interval_s=0.02)
        scanner = SensorScanner(source, silence_s=silence_s, check_period_s=0.02)
        task = asyncio.create_task(scanner.run())
        await asyncio.sleep(0.1)
        marks = {"before_stall": scanner.counters["advertisements"]}
        source.stall()  # the field failure: the scan goes quiet without an error
        # Nobody waits for a sensor: silence is expected (connected sensors do not advertise), no restart.
        await asyncio.sleep(2 * silence_s)
        marks["idle_restarts"] = scanner.counters["scanner_restarts"]
        # A link now waits for a sensor that is not there: the silent scanner must be restarted, once.
        marks["waiting_from"] = time.monotonic()
        waiter = asyncio.create_task(scanner.wait_for("JM-SHANK-missing", timeout_s=10.0))
        await asyncio.sleep(0.5 * silence_s)
        marks["early_restarts"] = scanner.counters["scanner_restarts"]
        await asyncio.sleep(2.5 * silence_s)  # three windows after the wait began: still exactly one
        marks["after_restart"] = scanner.counters["advertisements"]
        waiter.cancel()
        task.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
        return scanner, source, marks

    scanner, source, marks = asyncio.run(main())
    assert marks["before_stall"] > 0
    assert marks["idle_restarts"] == 0 and marks["early_restarts"] == 0
    assert scanner.counters["scanner_restarts"] == 1 and source.starts == 2
    # After the silence window, not before it, and not much later (one watchdog period + scheduling).
    delay = scanner.restart_times[0] - marks["waiting_from"]
    assert silence_s <= delay <= silence_s + 0.2
    assert marks["after_restart"] > marks["before_stall"]  # advertisements flow again after the restart


class StatusCollector(FrameCollector):
    """A frame collector that also keeps the gateway status it was given (counters and info)."""

    def __init__(self) -> None:
        super().__init__()
        self.info: dict[str, Any] = {}
        self.statuses: list[tuple[str, dict[str, int], dict[str, Any]]] = []

    def publish_status(self, state: str) -> None:
        super().publish_status(state)
        self.statuses.append((state, dict(self.extra_counters), dict(self.info)))


def test_unknown_sensor_is_reported_once_and_never_connected(caplog):
    known = peripheral("JM-T", "SIM:1", duration_s=1.5)
    stranger = peripheral("JM-STRANGER", "SIM:9", duration_s=1.5, battery_pct=42.0, seed=4)
    source = SimScanSource([known, stranger], interval_s=0.02, rssi_dbm={"SIM:9": -81})
    scanner = SensorScanner(source, silence_s=5.0)
    link = SimLink(known, scanner=scanner)
    pub = StatusCollector()
    gateway = Gateway(pub, [SensorBinding(link, "ath-001", "left_knee", "thigh")], scanner=scanner)
    with caplog.at_level(logging.WARNING, logger="jointmon.gateway.scanner"):
        asyncio.run(gateway.run())

    health = gateway.health()
    assert health["unknown_sensors"] == 1 and health["scanner_restarts"] == 0
    assert scanner.counters["advertisements"] > 20  # the stranger advertised all session ...
    reports = [r for r in caplog.records if "unknown jointmon sensor" in r.getMessage()]
    assert len(reports) == 1 and "SIM:9" in reports[0].getMessage()  # ... and was logged once
    # Never connected: it never streamed, nobody subscribed, it still advertises.
    assert stranger.start_wall_ns is None and sum(stranger.packets_sent.values()) == 0
    assert stranger.advertising
    # The configured sensor was found by the scanner, connected and streamed.
    assert link.connections == 1 and pub.counters["samples_published"] > 0 and link.rssi_dbm == -60
    state, counters, info = pub.statuses[-1]
    assert counters["unknown_sensors"] == 1 and counters["scanner_restarts"] == 0
    assert info["unknown_sensors"] == [{"address": "SIM:9", "name": "JM-STRANGER", "rssi_dbm": -81,
                                        "battery_pct": 42}]


def test_scan_listing_shows_rssi_battery_and_configured_or_unknown():
    cfg = load_gateway_config(EXAMPLE_CONFIG)  # configures JM-THIGH-01 and JM-SHANK-02
    thigh = peripheral("JM-THIGH-01", "C4:7C:8D:6A:1E:01", battery_pct=87.0)
    other = peripheral("JM-OTHER-07", "C4:7C:8D:6A:1E:07", battery_pct=9.0)

    async def scan() -> SensorScanner:
        scanner = SensorScanner(SimScanSource([thigh, other], interval_s=0.02,
                                              rssi_dbm={thigh.address: -48, other.address: -77}))
        task = asyncio.create_task(scanner.run())
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return scanner

    seen = list(asyncio.run(scan()).seen.values())
    lines = format_scan(seen, cfg.find).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("C4:7C:8D:6A:1E:01") and "JM-THIGH-01" in lines[0]  # strongest first
    assert "RSSI  -48 dBm" in lines[0] and "battery  87%" in lines[0]
    assert lines[0].endswith("configured: ath-001 left_knee thigh")
    assert "RSSI  -77 dBm" in lines[1] and "battery   9%" in lines[1]
    assert lines[1].endswith("unknown (not in the config)")
    bare = format_scan(seen)  # without --config: nothing to say about configured or unknown
    assert "configured" not in bare and "unknown" not in bare and "battery  87%" in bare
    assert "no jointmon sensors seen" in format_scan([])
