"""``jointmon demo``: a live session on simulated knee sensors, with nothing to install by hand.

Simulated thigh + shank sensors -> gateway -> MQTT (an embedded broker unless ``--mqtt``) ->
analysis -> a local SQLite results file (plus InfluxDB with ``--influx``), with a live progress
line and a summary that compares what was found with what was simulated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis.event_matching import MatchResult, match_events
from analysis.mqtt_service import AnalysisService
from analysis.result_sink import FanOut, ResultSink
from analysis.results_store import SqliteResults
from firmware_sim.session import SimulatedSession, simulate_squat_session
from jointmon.config import InfluxSettings, MqttSettings
from jointmon.embedded_broker import EmbeddedBroker
from jointmon.live_session import SessionRun, run_session

CLICK_TOLERANCE_S = 0.010


@dataclass
class DemoOptions:
    duration_s: float = 20.0
    seed: int = 0
    clicks: int = 5
    realtime: bool = True
    speed: float = 1.0
    mqtt_url: str | None = None
    influx: InfluxSettings | None = None
    results_dir: Path = Path("results")
    progress: bool = True
    broker: str = "mosquitto"  # embedded broker preference: "mosquitto" (if installed) or "amqtt"


@dataclass
class DemoSummary:
    session_id: str
    sim: SimulatedSession
    run: SessionRun
    clicks: MatchResult
    rep_peaks_deg: list[float]
    results_path: Path
    broker: str

    def text(self) -> str:
        s, r = self.sim, self.run
        generated = sum(r.samples_generated.values())
        analysed = sum(r.samples_analysed.values())
        truth_peaks = [round(p, 1) for p in s.peak_flexion_deg]
        est_peaks = [round(p, 1) for p in self.rep_peaks_deg]
        n = min(len(truth_peaks), len(est_peaks))
        peak_err = max((abs(a - b) for a, b in zip(est_peaks[:n], truth_peaks[:n], strict=True)), default=float("nan"))
        err_ms = np.abs(self.clicks.errors_s) * 1e3
        problems = {k: v for k, v in {**r.gateway_counters, **r.analysis_counters}.items()
                    if v and (k.startswith(("rejected_", "dropped_", "lost", "gap", "frames_missing", "link_")))}
        lines = [
            f"Session {self.session_id}: athlete {s.athlete}, {s.joint}, {s.duration_s:.0f} s of squats "
            f"(seed {s.seed}), broker {self.broker}, {r.wall_s:.1f} s wall time",
            f"  samples    generated {generated:,} | published {r.samples_published:,} | analysed {analysed:,}",
            f"  reps       {len(self.rep_peaks_deg)} detected / {s.rep_count} performed",
            f"  peak flex  detected {est_peaks} deg",
            f"             true     {truth_peaks} deg (max error {peak_err:.1f} deg)",
            f"  clicks     {len(self.clicks.pairs)} found / {len(s.labels)} injected, "
            f"{len(self.clicks.false_positives)} false, {len(self.clicks.missed)} missed; timing error "
            + (f"mean {err_ms.mean():.2f} ms, max {err_ms.max():.2f} ms" if err_ms.size else "n/a"),
            f"  problems   {problems or 'none (no rejected packets, gaps or dropped frames)'}",
            f"  results    {self.results_path}",
        ]
        return "\n".join(lines)


def run_demo(opts: DemoOptions) -> DemoSummary:
    session_id = time.strftime("demo-%Y%m%d-%H%M%S")
    sim = simulate_squat_session(opts.duration_s, seed=opts.seed, n_clicks=opts.clicks)
    results_path = opts.results_dir / f"{session_id}.sqlite"
    sinks: list[ResultSink] = [SqliteResults(results_path)]
    if opts.influx is not None:
        from analysis.influx_sink import InfluxSink

        sinks.append(InfluxSink(opts.influx))
    bar = tqdm(total=round(opts.duration_s, 1), unit="s", desc="starting", disable=not opts.progress,
               bar_format="session {n:5.1f}/{total:.1f} s |{bar:20}| {desc}")

    def progress(streamed_s: float, service: AnalysisService) -> None:
        clicks = sum(p.counters["clicks"] for p in service.pipelines.values())
        reps = sum(len(p.reps) for p in service.pipelines.values())
        flex = next((p.last_flexion_deg for p in service.pipelines.values()), float("nan"))
        bar.n = round(min(streamed_s, opts.duration_s), 1)
        bar.set_description_str(f"knee {flex:5.1f} deg  reps {reps}  clicks {clicks}")

    broker = EmbeddedBroker(prefer=opts.broker) if opts.mqtt_url is None else None
    try:
        if broker is not None:
            broker.start()
        mqtt = MqttSettings.from_url(opts.mqtt_url or broker.url)
        run = run_session(sim, mqtt, FanOut(*sinks), session_id, realtime=opts.realtime, speed=opts.speed,
                          on_progress=progress)
    finally:
        bar.close()
        if broker is not None:
            broker.stop()
    clicks = [e for e in run.events if e.type == "click"]
    match = match_events(np.array([e.stream_t_s for e in clicks]),
                         np.array([lb.t_start_s for lb in sim.labels if lb.type == "click"]), CLICK_TOLERANCE_S)
    peaks = [rep.peak_flexion_deg for p in run.pipelines.values() for rep in p.reps]
    return DemoSummary(session_id, sim, run, match, peaks, results_path,
                       broker.kind if broker is not None else opts.mqtt_url or "")
