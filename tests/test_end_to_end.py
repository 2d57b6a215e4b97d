"""End to end, every arrow a real protocol: simulated knee sensors -> gateway -> Mosquitto ->
analysis -> InfluxDB (1.x API, a real influxd), then the results are queried back with InfluxQL."""

import numpy as np
import pytest

from analysis.event_matching import match_events
from analysis.influx_sink import InfluxSink
from analysis.result_sink import FanOut
from analysis.results_store import SqliteResults
from firmware_sim.session import simulate_squat_session
from jointmon.config import InfluxSettings, MqttSettings
from jointmon.live_session import run_session

CLICK_TOLERANCE_S = 0.010


@pytest.fixture(scope="module")
def sim():
    return simulate_squat_session(30.0, seed=7, n_clicks=6)


def test_squat_session_end_to_end(sim, mosquitto, influxdb1, tmp_path):
    influx = InfluxSettings(url=influxdb1.url, api="v1", database=influxdb1.database, batch_size=2000,
                            flush_interval_s=0.2)
    sink = FanOut(SqliteResults(tmp_path / "r.sqlite"), InfluxSink(influx))
    run = run_session(sim, MqttSettings.from_url(mosquitto.url), sink, "e2e-1", realtime=False)

    # Every sample generated was published and analysed.
    generated = sum(run.samples_generated.values())
    assert run.samples_published == generated
    assert sum(run.samples_analysed.values()) == generated
    for key, n in run.samples_generated.items():
        assert run.samples_analysed[f"{sim.athlete}/{sim.joint}/{key}"] == n

    # Clicks, read back from InfluxDB: every injected click within 10 ms, no false click.
    rows = influxdb1.rows("SELECT stream_t_s, confidence, sensor FROM joint_event "
                          "WHERE \"type\" = 'click' AND session = 'e2e-1'")
    truth = [lb.t_start_s for lb in sim.labels if lb.type == "click"]
    assert len(truth) == 6
    m = match_events(np.array([r["stream_t_s"] for r in rows]), np.array(truth), CLICK_TOLERANCE_S)
    assert m.missed == [] and m.false_positives == [], (m, rows)
    assert np.max(np.abs(m.errors_s)) < CLICK_TOLERANCE_S

    # The knee angle series is there (50 Hz over the session) with the right peak flexion.
    angle = influxdb1.rows("SELECT count(flexion_deg) AS n, max(flexion_deg) AS peak FROM joint_angle "
                           "WHERE session = 'e2e-1'")[0]
    assert abs(angle["n"] - 50 * sim.duration_s) <= 2
    assert abs(angle["peak"] - max(sim.peak_flexion_deg)) < 5.0

    # Reps, with their peaks, also came through.
    reps = influxdb1.rows("SELECT peak_flexion_deg AS magnitude FROM rep WHERE session = 'e2e-1'")
    assert len(reps) == sim.rep_count
    np.testing.assert_allclose(sorted(r["magnitude"] for r in reps), sorted(sim.peak_flexion_deg), atol=5.0)

    # Nothing was dropped anywhere.
    assert not {k: v for k, v in run.gateway_counters.items() if k.startswith("rejected") and v}
    assert not {k: v for k, v in run.analysis_counters.items() if k.startswith("dropped") and v}


def test_lost_notifications_do_not_shift_clicks(sim, mosquitto, tmp_path):
    """Packets lost over the air leave explicit gaps; click times after them stay right."""
    drops = {"shank": [("mic", k) for k in range(100, 2400, 97)], "thigh": [("imu", 50), ("mic", 500)]}
    store = SqliteResults(tmp_path / "r.sqlite")
    run = run_session(sim, MqttSettings.from_url(mosquitto.url), store, "e2e-drops", realtime=False,
                      drop_packets=drops)
    lost = sum(100 if s == "mic" else 10 for v in drops.values() for s, _ in v)
    assert run.samples_published == sum(run.samples_generated.values()) - lost
    assert run.gateway_counters["gap_samples"] == lost
    clicks = [e for e in run.events if e.type == "click"]
    truth = [lb.t_start_s for lb in sim.labels]
    m = match_events(np.array([e.stream_t_s for e in clicks]), np.array(truth), CLICK_TOLERANCE_S)
    # A click that fell inside a lost packet cannot be heard on that sensor, but the other one hears it.
    assert m.missed == [] and m.false_positives == []
