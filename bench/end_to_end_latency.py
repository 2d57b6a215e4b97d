"""End to end: K knee streams replayed in real time -> gateway -> Mosquitto -> analysis -> InfluxDB, on this machine.

    .venv/bin/python bench/end_to_end_latency.py                          # K = 1, 4, 16, 32; 30 s each
    .venv/bin/python bench/end_to_end_latency.py --streams 4 --seconds 60 /tmp/ss/s000.jmrec

Latency of an event = (when a query first returns it from InfluxDB) - (its onset ``t_ns``: the sensor time of
its first sample, mapped to the wall clock by the gateway), in ms; reps from their end (a rep is an event once
it has ended, as in ``bench/latency.py``). Per K the figures p50 / p95 / p99 / max, and the largest K whose
p99 stays <= 250 ms (the issue's target: at >= 32 streams).

Per K, every part runs as it does in production, each in its own process, on fresh servers:

* Mosquitto and influxd 1.6 (``tests/servers.py``: the servers the tests use);
* the gateway: knee recordings of the standard set (``/tmp/ss``, ``bench/standard_set.py``) replayed at speed 1
  through :class:`sensor_gateway.gateway.Gateway` (decoding, clock fit, frames) into MQTT, up to
  ``--knees-per-gateway`` knees per gateway process (a club's gateway serves a group); knee *i* is recording
  ``i mod R`` under its own athlete id, times shifted to now exactly (as ``bench/latency.py`` replays);
* the analysis service (:class:`analysis.mqtt_service.AnalysisService`, the SQLite results file and the InfluxDB
  sink, as ``jointmon analyze --mqtt --influx`` builds them) with the InfluxDB writer's flush interval set by
  ``--influx-flush`` (the default of ``InfluxSettings`` is 1 s, which alone puts most events past 250 ms);
* this process: an MQTT subscriber to the events (their MQTT latency, for comparison) and a poller that queries
  InfluxDB every ``--poll-ms`` for the events and reps of the last seconds (up to one poll interval of each
  figure is the polling).

A knee stream is two IMUs (200 Hz) and one microphone (16 kHz; the shank's, ``--mics 2`` for both as recorded).
Events the analysis publishes only when it is stopped (end of stream) and the pre-calibration backfill are not
in the percentiles (as in ``bench/latency.py``). The CPU time each process used is printed per K (cores busy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.analysis_throughput import default_recordings  # noqa: E402
from bench.latency import TARGET_P99_MS, EventLatencyProbe, LatencyReport, Received, latency_report  # noqa: E402
from jointmon.messages import JointEvent  # noqa: E402

log = logging.getLogger("jointmon.bench.e2e")

DEFAULT_STREAMS = (1, 4, 16, 32)
TARGET_STREAMS = 32
START_TIMEOUT_S = 60.0  # a loaded 2-core machine imports numpy/scipy slowly
EVENT_WINDOW_S = 20.0  # the poller looks at events with onsets this far back (later ones would be > 20 s late)
REP_WINDOW_S = 40.0  # reps are stamped at their start: their window adds the longest rep
QUIET_S = 2.0  # after the sources end: nothing new in InfluxDB for this long -> the analysis caught up
DRAIN_MAX_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_S = 3.0  # frame lag: not over a stream's first seconds (the gateway's clock fit holds them back 2 s, once)


# ------------------------------------------------------------------------------------------------
# worker processes
# ------------------------------------------------------------------------------------------------

def gateway_worker(url: str, gateway_id: str, first: int, count: int, seconds: float, mics: int,
                   recordings: list[str]) -> int:
    """Replay ``count`` knees (knee i = recording i mod R, athlete ``e2e-i``) through one gateway into ``url``
    for ``seconds``; print this process's CPU seconds and counters as JSON."""
    import firmware_sim.replay as replay
    from jointmon.config import MqttSettings
    from jointmon.packets import StreamType
    from jointmon.recording import read_recording
    from sensor_gateway.gateway import Gateway, SensorBinding
    from sensor_gateway.mqtt_publisher import MqttPublisher

    def exact_offset_ns(first_arrival_ns: int, now_ns: int | None = None) -> int:
        return (time.time_ns() if now_ns is None else now_ns) - first_arrival_ns

    replay.replay_offset_ns = exact_offset_ns  # sample times = when they are really replayed (bench/latency.py)
    publisher = MqttPublisher(MqttSettings.from_url(url), gateway_id)
    bindings = []
    players = []
    for i in range(first, first + count):
        rec = read_recording(recordings[i % len(recordings)])
        player = replay.ReplayPlayer(rec, 1.0)
        players.append(player)
        for s in rec.sensors:
            streams = (StreamType.IMU, StreamType.MIC_PCM16) if mics == 2 or s.segment == "shank" \
                else (StreamType.IMU,)
            bindings.append(SensorBinding(player.link(s.index), f"e2e-{i:03d}", s.joint, s.segment, streams))
    gateway = Gateway(publisher, bindings)
    publisher.start()

    async def main() -> None:
        run = asyncio.create_task(gateway.run())
        done, _ = await asyncio.wait([run], timeout=seconds)
        if not done:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run

    try:
        asyncio.run(main())
        publisher.wait_acked()
    finally:
        publisher.stop()
    print(json.dumps({"cpu_s": time.process_time(), "frames": publisher.counters["frames_published"],
                      "delivered": sum(p.counters["delivered"] for p in players)}), flush=True)
    return 0


def analysis_worker(url: str, influx_url: str, database: str, session: str, flush_s: float, results: str,
                    worker_id: str) -> int:
    """The analysis service with the SQLite and InfluxDB sinks until SIGTERM; print its CPU seconds, counters,
    deepest frame backlog and how late frames reached it (frame's last sample -> on_message), as JSON."""
    from analysis.influx_sink import InfluxSink
    from analysis.mqtt_service import AnalysisService
    from analysis.result_sink import FanOut
    from analysis.results_store import SqliteResults
    from jointmon.config import InfluxSettings, MqttSettings
    from jointmon.frames import FRAME_HEADER

    sink = FanOut(SqliteResults(results), InfluxSink(InfluxSettings(url=influx_url, api="v1", database=database,
                                                                      flush_interval_s=flush_s)))
    service = AnalysisService(MqttSettings.from_url(url), sink, session, worker_id)
    lag_ms: list[float] = []
    on_message = service.client.on_message

    def timed(client: object, userdata: object, msg: object) -> None:
        now = time.time_ns()
        payload = msg.payload  # type: ignore[attr-defined]
        if "/data/" in msg.topic and len(payload) >= FRAME_HEADER.size:  # type: ignore[attr-defined]
            *_, first_index, t0_ns, rate_hz, count = FRAME_HEADER.unpack_from(payload)
            if rate_hz > 0 and first_index >= STARTUP_S * rate_hz:  # the gateway holds a stream's first 2 s back
                lag_ms.append((now - t0_ns - round(count * 1e9 / rate_hz)) / 1e6)
        on_message(client, userdata, msg)  # type: ignore[misc]

    service.client.on_message = timed
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    backlog = 0
    while not stop.wait(0.2):
        backlog = max(backlog, service._queue.qsize())
    service.stop()
    lag = np.percentile(lag_ms, [50, 99]).tolist() if lag_ms else [float("nan")] * 2
    print(json.dumps({"cpu_s": time.process_time(), "max_backlog_frames": backlog, "frame_lag_p50_ms": lag[0],
                      "frame_lag_p99_ms": lag[1], "counters": dict(service.counters)}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# this process: the InfluxDB poller
# ------------------------------------------------------------------------------------------------

class InfluxPoller:
    """Queries InfluxDB every ``poll_s`` for the joint events and reps of the last seconds and notes when each
    point was first returned (wall ns after the answer arrived). ``flushing``: points first seen from now on
    are end-of-stream flushes."""

    def __init__(self, url: str, database: str, poll_s: float) -> None:
        self.url, self.database, self.poll_s = url, database, poll_s
        self.seen: dict[tuple[object, ...], Received] = {}
        self.flushing = False
        self.last_new_mono = time.monotonic()
        self.queries = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="influx-poller", daemon=True)

    def start(self) -> InfluxPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def poll(self) -> None:
        from tests.servers import http_get

        q = (f"SELECT * FROM joint_event WHERE time > now() - {EVENT_WINDOW_S:.0f}s; "
             f"SELECT * FROM rep WHERE time > now() - {REP_WINDOW_S:.0f}s")
        status, body = http_get(f"{self.url}/query?" + urllib.parse.urlencode(
            {"q": q, "db": self.database, "epoch": "ns"}), timeout_s=5.0)
        now = time.time_ns()
        self.queries += 1
        if status != 200:
            self.errors += 1
            return
        for measurement, result in zip(("joint_event", "rep"), json.loads(body).get("results", []), strict=False):
            for series in result.get("series", []):
                cols = series["columns"]
                for values in series["values"]:
                    row = dict(zip(cols, values, strict=True))
                    key = (measurement, row["time"], row.get("athlete"), row.get("joint"), row.get("type"),
                           row.get("sensor"))
                    if key not in self.seen:
                        event = _event_from_row(measurement, row)
                        if event is not None:
                            self.seen[key] = Received(now, event, "", self.flushing)
                            self.last_new_mono = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.poll()
            except (OSError, ValueError):
                self.errors += 1
            self._stop.wait(max(0.0, self.poll_s - (time.monotonic() - t0)))


def _event_from_row(measurement: str, row: dict[str, object]) -> JointEvent | None:
    """A point read back as the event it was written from (the fields the latency report needs)."""
    def num(name: str, default: float = 0.0) -> float:
        v = row.get(name)
        return float(v) if isinstance(v, int | float) else default

    try:
        if measurement == "rep":
            return JointEvent("rep", str(row["athlete"]), str(row["joint"]), str(row.get("session", "")),
                              int(row["time"]), 0.0, "", 1.0, num("peak_flexion_deg"),
                              {"duration_s": num("duration_s")})
        details = json.loads(str(row.get("details") or "{}"))
        return JointEvent(str(row["type"]), str(row["athlete"]), str(row["joint"]), str(row.get("session", "")),
                          int(row["time"]), num("stream_t_s"), str(row.get("sensor") or ""),
                          min(1.0, max(0.0, num("confidence"))), num("magnitude"),
                          details if isinstance(details, dict) else {})
    except (KeyError, ValueError, TypeError) as exc:
        log.warning("unreadable %s point %s: %s", measurement, row, exc)
        return None


# ------------------------------------------------------------------------------------------------
# one run at K streams
# ------------------------------------------------------------------------------------------------

def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _last_json(path: Path) -> dict[str, object]:
    for ln in reversed(path.read_text(errors="replace").splitlines()):
        if ln.startswith("{"):
            return json.loads(ln)
    return {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@dataclass
class Run:
    """The figures of one K."""

    streams: int
    report: LatencyReport
    mqtt_report: LatencyReport
    cpu_s: dict[str, float]
    wall_s: float
    analysis: dict[str, object] = field(default_factory=dict)
    load_1min: float = 0.0
    queries: int = 0


def run_k(k: int, args: argparse.Namespace, influx: object, workdir: Path, bar: tqdm) -> Run:
    from tests.servers import MosquittoServer

    database = f"e2e_k{k}"
    influx.create_database(database)  # type: ignore[attr-defined]
    with MosquittoServer(workdir=workdir / f"mosquitto-k{k}") as broker, EventLatencyProbe(broker.url) as probe:
        session = f"e2e-k{k}"
        worker = f"e2e-analysis-k{k}"
        alog = workdir / f"analysis-k{k}.log"
        with alog.open("wb") as f:
            analysis = subprocess.Popen(_me("--analysis-worker", broker.url, influx.url, database,  # type: ignore
                                            session, str(args.influx_flush), str(workdir / f"k{k}.sqlite"), worker),
                                        stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        gateways: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while worker not in probe.online:
                if analysis.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"analysis did not come online:\n{_tail(alog)}")
                time.sleep(0.05)
            poller = InfluxPoller(influx.url, database, args.poll_ms / 1e3).start()  # type: ignore[attr-defined]
            servers = {"mosquitto": broker.proc.pid, "influxd": influx.proc.pid}  # type: ignore[attr-defined]
            cpu0 = {name: _cpu_s(pid) for name, pid in servers.items()}
            t0 = time.monotonic()
            per = args.knees_per_gateway
            for g, first in enumerate(range(0, k, per)):
                glog = workdir / f"gateway-k{k}-{g}.log"
                with glog.open("wb") as f:
                    gateways.append((subprocess.Popen(
                        _me("--gateway-worker", broker.url, f"gw-e2e-{g}", str(first), str(min(per, k - first)),
                            str(args.seconds), str(args.mics), *map(str, args.recordings)),
                        stdout=f, stderr=subprocess.STDOUT, cwd=REPO), glog))
            done = 0.0
            while any(p.poll() is None for p, _ in gateways):
                time.sleep(0.2)
                step = min(time.monotonic() - t0, args.seconds) - done
                bar.update(step)
                done += step
                if time.monotonic() - t0 > args.seconds + START_TIMEOUT_S + 30:
                    raise RuntimeError("a gateway process is stuck:\n" + "\n".join(_tail(lg) for _, lg in gateways))
            bar.update(args.seconds - done)
            for p, lg in gateways:
                if p.returncode != 0:
                    raise RuntimeError(f"gateway process exited with {p.returncode}:\n{_tail(lg)}")
            deadline = time.monotonic() + DRAIN_MAX_S
            while time.monotonic() - poller.last_new_mono < QUIET_S and time.monotonic() < deadline:
                time.sleep(0.1)
            wall = time.monotonic() - t0
            cpu = {name: _cpu_s(pid) - cpu0[name] for name, pid in servers.items()}
            poller.flushing = probe.flushing = True
            analysis.send_signal(signal.SIGTERM)
            analysis.wait(120)
            time.sleep(max(1.5, 3 * args.influx_flush))  # the flushed points reach InfluxDB
            poller.poll()
            poller.stop()
        finally:
            for p, _ in gateways:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if analysis.poll() is None:
                analysis.kill()
                analysis.wait()
        a = _last_json(alog)
        cpu["analysis"] = float(a.get("cpu_s", 0.0))  # type: ignore[arg-type]
        cpu["gateways"] = sum(float(_last_json(lg).get("cpu_s", 0.0)) for _, lg in gateways)  # type: ignore[arg-type]
        # The events topic carries each event whole (details: backfilled, duration); InfluxDB's rep point does not
        # say it was backfilled. So each point seen in InfluxDB takes its event as published, when there is one.
        published = {(r.event.type, r.event.athlete, r.event.joint, r.event.t_ns): r for r in probe.received}
        received = []
        for r in poller.seen.values():
            m = published.get((r.event.type, r.event.athlete, r.event.joint, r.event.t_ns))
            received.append(r if m is None else Received(r.recv_ns, m.event, "", r.flushed or m.flushed))
        mqtt_received = list(probe.received)
        return Run(k, latency_report(received), latency_report(mqtt_received), cpu, wall, a, os.getloadavg()[0],
                   poller.queries)


def table(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [f"end to end (sensor time of the event's onset -> queryable in InfluxDB), {args.seconds:.0f} s per K, "
             f"InfluxDB writer flush {args.influx_flush * 1e3:.0f} ms, poll {args.poll_ms:.0f} ms; "
             f"knee stream = 2 IMUs + {args.mics} mic(s); {os.cpu_count()} CPUs",
             f"{'K':>4}{'events':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'MQTT p99':>10}"
             f"{'frame lag p99':>15}{'backlog':>9}{'cores: analysis':>17}{'gateways':>10}{'mosquitto':>11}"
             f"{'influxd':>9}{'load':>6}"]
    for r in runs:
        o, m = r.report.overall, r.mqtt_report.overall
        cores = {name: s / r.wall_s for name, s in r.cpu_s.items()}
        lines.append(f"{r.streams:>4}{o.n:>8}{o.p50_ms:>9.0f}{o.p95_ms:>9.0f}{o.p99_ms:>9.0f}{o.max_ms:>9.0f}"
                     f"{m.p99_ms:>10.0f}{float(r.analysis.get('frame_lag_p99_ms', float('nan'))):>15.0f}"
                     f"{int(r.analysis.get('max_backlog_frames', 0)):>9}{cores.get('analysis', 0):>17.2f}"
                     f"{cores.get('gateways', 0):>10.2f}{cores.get('mosquitto', 0):>11.2f}"
                     f"{cores.get('influxd', 0):>9.2f}{r.load_1min:>6.1f}")
    ok = [r.streams for r in runs if r.report.overall.n and r.report.overall.p99_ms <= TARGET_P99_MS]
    best = max(ok) if ok else 0
    verdict = "meets" if best >= TARGET_STREAMS else "MISSES"
    lines.append(f"largest K with p99 <= {TARGET_P99_MS:.0f} ms: {best or 'none'} of those run; {verdict} the target "
                 f"(p99 <= {TARGET_P99_MS:.0f} ms at >= {TARGET_STREAMS} streams)")
    lines.append("per event type at the largest K:")
    lines.append(runs[-1].report.table())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Prints p50/p99 per K; exit 1 below target.",
                                epilog="See the module docstring (bench/end_to_end_latency.py) for what is measured.")
    p.add_argument("recordings", nargs="*", type=Path, metavar="FILE.jmrec",
                   help="knee recordings to replay [the first 8 knee recordings in /tmp/ss]")
    p.add_argument("--streams", default=",".join(map(str, DEFAULT_STREAMS)), help="comma-separated K [%(default)s]")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds replayed per K (<= the recordings' "
                   "length, 60 s in the standard set) [%(default)s]")
    p.add_argument("--mics", type=int, choices=(1, 2), default=1, help="microphones per knee [%(default)s]")
    p.add_argument("--knees-per-gateway", type=int, default=8, help="knees per gateway process [%(default)s]")
    p.add_argument("--influx-flush", type=float, default=0.05, metavar="S",
                   help="InfluxDB writer flush interval, s [%(default)s; the library default is 1.0]")
    p.add_argument("--poll-ms", type=float, default=50.0, help="InfluxDB poll interval, ms [%(default)s]")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--gateway-worker", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--analysis-worker", nargs=7, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.gateway_worker:
        url, gw, first, count, seconds, mics = args.gateway_worker
        return gateway_worker(url, gw, int(first), int(count), float(seconds), int(mics), list(map(str,
                                                                                                 args.recordings)))
    if args.analysis_worker:
        url, influx_url, db, session, flush, results, worker = args.analysis_worker
        return analysis_worker(url, influx_url, db, session, float(flush), results, worker)
    if not args.recordings:
        args.recordings = default_recordings(n=8)
        if not args.recordings:
            p.error("no knee recordings in /tmp/ss: run .venv/bin/python bench/standard_set.py --out /tmp/ss")
    missing = [str(r) for r in args.recordings if not r.is_file()]
    if missing:
        p.error(f"no such recording: {', '.join(missing)}")
    try:
        counts = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    except ValueError:
        p.error(f"--streams {args.streams!r}: comma-separated integers")
    if not counts or counts[0] < 1 or args.knees_per_gateway < 1 or not args.seconds > 0:
        p.error("--streams, --knees-per-gateway and --seconds must be positive")

    from tests.servers import InfluxDB1Server, ServerNotInstalledError

    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="jointmon-e2e-") as tmp, InfluxDB1Server() as influx, \
                tqdm(total=args.seconds * len(counts), unit="s", disable=args.no_progress, leave=False,
                     bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
            for k in counts:
                bar.set_description(f"K={k}")
                try:
                    runs.append(run_k(k, args, influx, Path(tmp), bar))
                except RuntimeError as exc:
                    print(f"end_to_end_latency: K={k}: {exc}", file=sys.stderr)
                    return 2
    except ServerNotInstalledError as exc:
        print(f"end_to_end_latency: {exc}", file=sys.stderr)
        return 2
    print(table(runs, args))
    if args.json:
        Path(args.json).write_text(json.dumps([{"streams": r.streams, "influx": r.report.as_dict(),
                                                "mqtt": r.mqtt_report.as_dict(), "cpu_s": r.cpu_s, "wall_s": r.wall_s,
                                                "analysis": r.analysis, "load_1min": r.load_1min}
                                               for r in runs], indent=1))
    ok = [r.streams for r in runs if r.report.overall.n and r.report.overall.p99_ms <= TARGET_P99_MS]
    return 0 if ok and max(ok) >= TARGET_STREAMS else 1


if __name__ == "__main__":
    sys.exit(main())
