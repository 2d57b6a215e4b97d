"""``jointmon demo``: a live session on simulated knee sensors, with nothing to install by hand.

Simulated thigh + shank sensors -> gateway -> MQTT (an embedded broker unless ``--mqtt``) ->
analysis -> a local SQLite results file (plus InfluxDB with ``--influx``), with a live progress
line and a summary that compares what was found with what was simulated. The analysis also serves the
live web view (:mod:`analysis.web_view`) on 127.0.0.1 unless ``web_port`` is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis.event_matching import MatchResult, match_events
from analysis.mqtt_service import AnalysisService
from analysis.result_sink import FanOut, ResultSink
from analysis.results_store import SqliteResults
from analysis.web_view import DEFAULT_PORT, WEB_GRADE_INTERVAL_S, WebView
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
    web_port: int | None = DEFAULT_PORT  # live web view on 127.0.0.1:web_port (0: a free port; None: none)


@dataclass
class DemoSummary:
    session_id: str
    sim: SimulatedSession
    run: SessionRun
    clicks: MatchResult
    rep_peaks_deg: list[float]
    results_path: Path
    broker: str
    web_url: str | None = None

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
            *self._grade_lines(),
            f"  problems   {problems or 'none (no rejected packets, gaps or dropped frames)'}",
            f"  results    {self.results_path}",
        ]
        if self.web_url:
            lines.append(f"  live view  {self.web_url}")
        return "\n".join(lines)

    def _grade_lines(self) -> list[str]:
        """The red-flag grade per joint with its reasons in plain words (docs/red-flags.md)."""
        lines = []
        for g in self.run.grades:
            lines.append(f"  grade      {g.joint}: {g.grade.upper()}")
            reasons = [r.text for r in g.reasons] or ["no red flag measured or reported"]
            lines += [f"             - {text}" for text in reasons]
            lines.append(f"             ({g.disclaimer})")
        return lines


def run_demo(opts: DemoOptions, on_web_url: Callable[[str], None] | None = None,
             after_session: Callable[[DemoSummary], None] | None = None) -> DemoSummary:
    """Run the demo session. ``on_web_url(url)`` is called once the live view serves (before the session
    starts); ``after_session(summary)`` is called while the live view still serves the finished session
    (e.g. to print the summary and keep the page up until Ctrl-C), then the view stops."""
    session_id = time.strftime("demo-%Y%m%d-%H%M%S")
    sim = simulate_squat_session(opts.duration_s, seed=opts.seed, n_clicks=opts.clicks)
    results_path = opts.results_dir / f"{session_id}.sqlite"
    bar = tqdm(total=round(opts.duration_s, 1), unit="s", desc="starting", disable=not opts.progress,
               bar_format="session {n:5.1f}/{total:.1f} s |{bar:20}| {desc}")

    def progress(streamed_s: float, service: AnalysisService) -> None:
        clicks = sum(p.counters["clicks"] for p in service.pipelines.values())
        reps = sum(len(p.reps) for p in service.pipelines.values())
        flex = next((p.last_flexion_deg for p in service.pipelines.values()), float("nan"))
        bar.n = round(min(streamed_s, opts.duration_s), 1)
        bar.set_description_str(f"knee {flex:5.1f} deg  reps {reps}  clicks {clicks}")

    broker = EmbeddedBroker(prefer=opts.broker) if opts.mqtt_url is None else None
    web: WebView | None = None
    try:
        if broker is not None:
            broker.start()
        mqtt = MqttSettings.from_url(opts.mqtt_url or broker.url)
        if opts.web_port is not None:  # first: a busy port fails before anything is written
            web = WebView(session_id, mqtt, port=opts.web_port, joints=[(sim.athlete, sim.joint)]).start()
            if on_web_url is not None:
                with tqdm.external_write_mode():  # on its own line, not glued to the progress bar
                    on_web_url(web.url)
        sinks: list[ResultSink] = [SqliteResults(results_path)]
        if opts.influx is not None:
            from analysis.influx_sink import InfluxSink

            sinks.append(InfluxSink(opts.influx))
        if web is not None:
            sinks.append(web)
        run = run_session(sim, mqtt, FanOut(*sinks), session_id, realtime=opts.realtime, speed=opts.speed,
                          on_progress=progress, grade_interval_s=WEB_GRADE_INTERVAL_S if web is not None else None)
    except BaseException:
        if web is not None:
            web.shutdown()
        raise
    finally:
        bar.close()
        if web is not None:
            web.stop_mqtt()  # before the broker goes: the page keeps what it has
        if broker is not None:
            broker.stop()
    clicks = [e for e in run.events if e.type == "click"]
    match = match_events(np.array([e.stream_t_s for e in clicks]),
                         np.array([lb.t_start_s for lb in sim.labels if lb.type == "click"]), CLICK_TOLERANCE_S)
    peaks = [rep.peak_flexion_deg for p in run.pipelines.values() for rep in p.reps]
    summary = DemoSummary(session_id, sim, run, match, peaks, results_path,
                          broker.kind if broker is not None else opts.mqtt_url or "", web.url if web else None)
    try:
        if after_session is not None:
            after_session(summary)
    finally:
        if web is not None:
            web.shutdown()
    return summary
