"""Four sensors on one virtual Bluetooth radio (Bumble), at full rates: notification throughput per sensor against
the budget of docs/protocol.md §2, and what a full radio costs (counted drops, never silent loss).

Real time (the gateway stamps arrivals with its own clock); the speed figures are in bench/ble_throughput.py.
"""

import pytest

from firmware_sim.bumble_virtual import PHY_BYTES_PER_S
from jointmon.bumble_session import BUDGET_BPS, multi_sensor_session, run_ble_session, sensor_throughput
from jointmon.config import MqttSettings

BIG_RING = 512  # packets: against test-machine stalls, where every packet must arrive


def test_four_sensors_full_rates_all_packets_arrive(mosquitto):
    """30 s of session, two sensors with a PCM16 microphone and two with IMA ADPCM, on the 2M PHY (~57 % of its
    airtime): every packet arrives, and each sensor's throughput is the protocol's budget for its encoding."""
    seconds = 30.0
    sim = multi_sensor_session(4, seconds)
    codecs = {"s1": "pcm16", "s2": "pcm16", "s3": "ima_adpcm", "s4": "ima_adpcm"}
    run = run_ble_session(sim, MqttSettings.from_url(mosquitto.url), None, "ble-tp", speed=1.0,
                          bytes_per_s=PHY_BYTES_PER_S["2m"], faults={s: {"mic_codec": c} for s, c in codecs.items()},
                          tx_buffer_packets=BIG_RING)
    rows = {t.segment: t for t in sensor_throughput(run, seconds)}
    assert set(rows) == set(codecs)
    for seg, t in rows.items():
        assert t.packets_received == t.packets_produced, (seg, run.sensor_lost[seg])
        assert t.tx_overflow == 0
        assert t.delivered_bps == pytest.approx(t.produced_bps, rel=1e-9)
        assert t.delivered_bps == pytest.approx(BUDGET_BPS[codecs[seg]], rel=0.005), seg  # §2 "Bluetooth budget"
    g = run.gateway_counters
    assert g.get("lost_packets", 0) == 0 and g.get("gap_samples", 0) == 0
    assert run.samples_published == sum(run.samples_generated.values())
    need = sum(BUDGET_BPS[c] for c in codecs.values())
    assert run.radio_busy_s / seconds == pytest.approx(need / PHY_BYTES_PER_S["2m"], rel=0.03)


def test_full_radio_drops_are_counted(mosquitto):
    """Four PCM16 sensors need ~150 kB/s, the 1M PHY carries ~97 kB/s: the radio runs full, each sensor gets about
    a quarter of it, and every packet its TX ring dropped is one the gateway reports lost (a gap), none more."""
    seconds = 8.0
    sim = multi_sensor_session(4, seconds, seed=1)
    run = run_ble_session(sim, MqttSettings.from_url(mosquitto.url), None, "ble-full", speed=1.0,
                          bytes_per_s=PHY_BYTES_PER_S["1m"], faults={"mic_codec": "pcm16"})
    rows = sensor_throughput(run, seconds)
    capacity = PHY_BYTES_PER_S["1m"]
    need = sum(t.produced_bps for t in rows)
    assert need == pytest.approx(4 * BUDGET_BPS["pcm16"], rel=0.005)
    # Full all the time, so the sensors together get what the radio's airtime carries: its capacity times the time it
    # was busy (measured, not the nominal session: on a loaded machine the four sessions start further apart and the
    # radio stays busy past the nominal end), far less than they need.
    assert run.radio_busy_s > 0.95 * seconds
    delivered_bytes = sum(t.delivered_bps for t in rows) * seconds
    assert delivered_bytes == pytest.approx(capacity * run.radio_busy_s, rel=0.03)
    assert delivered_bytes < 0.8 * need * seconds
    # Shared fairly: within 25 %. The sensors sample one session from one instant (SessionWorld) but the gateway
    # connects and starts them one after another, so the last one started has streamed a few hundred ms less of the
    # 8 s (16 % apart was seen; they were within 15 % when each sensor's session began at its own START).
    assert max(t.delivered_bps for t in rows) < 1.25 * min(t.delivered_bps for t in rows)
    overflow = sum(t.tx_overflow for t in rows)
    assert overflow > 0.2 * sum(t.packets_produced for t in rows)
    # Every overwritten packet is a gap the gateway reports, except those a late-started sensor overwrote before its
    # stream's first notification (no sequence gap can show them): the sensor counts those apart.
    unseen = sum(c.get(f"unseen_tx_overflow_{s}", 0) for c in run.sensor_counters.values() for s in ("imu", "mic"))
    assert unseen < 0.05 * overflow
    assert run.gateway_counters["lost_packets"] == overflow - unseen
    for t in rows:
        assert t.packets_received + t.tx_overflow == t.packets_produced
