"""Per-sensor supervision through the simulated peripheral (real time): connect failures and a link drop
recovered with backoff and jitter, a silent link reconnected by the watchdog, every sample accounted for."""

from __future__ import annotations

import asyncio
import random

import pytest
from test_gateway_transport import synthetic_signals

from firmware_sim.peripheral import SimulatedPeripheral
from jointmon.errors import ConfigError
from sensor_gateway.gateway import Gateway, SensorBinding
from sensor_gateway.recorder import FrameCollector
from sensor_gateway.sim_link import SimLink, SimLinkFaults
from sensor_gateway.supervisor import LinkState, SupervisorSettings


def run_one(duration_s: float, faults: SimLinkFaults, settings: SupervisorSettings):
    sig = synthetic_signals("thigh", duration_s, 3)
    link = SimLink(SimulatedPeripheral(sig, address="SIM:1", name="JM-T", realtime=True), faults)
    pub = FrameCollector()
    gateway = Gateway(pub, [SensorBinding(link, "ath-001", "left_knee", "thigh")], supervisor=settings)
    asyncio.run(gateway.run())
    generated = sig.imu_raw.shape[0] + sig.mic_raw.shape[0]
    return gateway, link, pub, generated


def test_connect_failures_and_a_drop_are_retried_with_backoff_and_streaming_resumes():
    settings = SupervisorSettings(backoff_initial_s=0.2, backoff_max_s=1.0, silence_s=2.0)
    gateway, link, pub, generated = run_one(5.0, SimLinkFaults(connect_failures=2, drops_at_s=(2.0,)), settings)
    sup = gateway._sensors[0].supervisor
    c = gateway.health()
    assert (c["connect_attempts"], c["connect_failures"], c["link_drops"], c["reconnects"]) == (4, 2, 1, 1)
    assert c["watchdog_reconnects"] == 0
    states = [s for _, s in sup.transitions]
    assert states == [LinkState.CONNECTING, LinkState.BACKOFF, LinkState.CONNECTING, LinkState.BACKOFF,
                      LinkState.CONNECTING, LinkState.STREAMING, LinkState.BACKOFF, LinkState.CONNECTING,
                      LinkState.STREAMING, LinkState.STOPPED]
    # Exponential with equal jitter: retry k waits in [base/2, base], base = 0.2 * 2^k (the drop came
    # 2 s after connecting, less than stable_s, so the backoff did not reset).
    assert len(sup.backoffs_s) == 3
    for k, delay in enumerate(sup.backoffs_s):
        base = min(1.0, 0.2 * 2 ** k)
        assert base / 2 <= delay <= base
    # The drop lost the notifications until the reconnect (at most ~0.8 s + connect), nothing else:
    # every sample is published or inside the reported gap.
    assert 0 < link.lost["samples"] < 1.2 * 16200
    assert pub.counters["samples_published"] + link.lost["samples"] == generated
    assert gateway.stream_counters()["gap_samples"] == link.lost["samples"]


def test_watchdog_reconnects_a_connected_but_silent_sensor():
    settings = SupervisorSettings(backoff_initial_s=0.1, backoff_max_s=0.2, silence_s=0.6, watchdog_period_s=0.1)
    gateway, link, pub, generated = run_one(4.0, SimLinkFaults(stalls_at_s=(1.5,)), settings)
    c = gateway.health()
    assert c["watchdog_reconnects"] == 1 and c["link_drops"] == 0 and c["reconnects"] == 1
    assert link.connections == 2
    # Silent from 1.5 s until the watchdog fired (0.6 s + up to one 0.1 s period) and the reconnect
    # (backoff <= 0.1 s): the lost stretch is 0.6..~1.0 s of microphone.
    lost_mic_s = link.lost["samples"] / (16000 + 200)
    assert 0.55 < lost_mic_s < 1.1
    assert pub.counters["samples_published"] + link.lost["samples"] == generated
    assert gateway.stream_counters()["gap_samples"] == link.lost["samples"]


def test_backoff_is_bounded_and_jittered():
    s = SupervisorSettings(backoff_initial_s=0.5, backoff_max_s=30.0)
    rng = random.Random(1)
    delays = [s.backoff_s(k, rng) for k in range(12)]
    assert all(15.0 <= d <= 30.0 for d in delays[7:])  # capped at 30 s, never below half of it
    assert len({round(d, 6) for d in delays[7:]}) == 5  # jittered: no two equal
    with pytest.raises(ConfigError, match="silence_s"):
        SupervisorSettings(silence_s=0)
