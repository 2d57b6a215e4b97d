"""Analysis throughput: how many knee streams one analysis process keeps up with in real time, per core.

    .venv/bin/python bench/analysis_throughput.py                       # 1, 4, 16, 64 streams, 30 s each
    .venv/bin/python bench/analysis_throughput.py --streams 1,16 --seconds 20 /tmp/ss/s000.jmrec
    .venv/bin/python bench/analysis_throughput.py --profile /tmp/prof.pstats   # where the time goes, per file

A knee stream is what one knee sends: two IMUs (thigh, shank) at 200 Hz and one contact microphone at
16 kHz (``--mics 2`` keeps both sensors' microphones, as the simulator records them). Every detector of
the live analysis runs (:class:`analysis.joint_router.JointRouter` -> one
:class:`analysis.knee_pipeline.KneePipeline` per knee, exactly the code ``jointmon analyze`` runs).

The frames come from recordings of the standard set (``bench/standard_set.py --out /tmp/ss``), decoded
once by the gateway's own code (:func:`sensor_gateway.recorder.frames_from_recording`) and kept in
memory: no broker, no decoding in the measured loop. Stream *i* replays recording ``i mod R`` under its
own athlete id. The streams are interleaved as they arrive live: in 50 ms ticks of session time, every
stream's frames whose last sample falls in the tick, stream after stream.

Each stream count runs in a fresh child process (clean memory figures). Measured per run:

* CPU: the process's CPU time (``time.process_time``: user + system of this process only, so other
  work on the machine does not count) per second of session per stream, in ms. Its inverse is the
  number of streams one core keeps up with in real time (``streams/core``). Wall time is printed too;
  on a busy machine it is larger than the CPU time.
* memory: growth of the resident set size while the pipelines run (their state and buffers), per
  stream, in MiB (``--tracemalloc``: the bytes Python and NumPy hold, instead; slower).
* cost of growth: the CPU per stream at N streams over the CPU per stream at the smallest N; 1.0 = flat.

The end of the session (``finish()``: pending detections) is not timed: it happens once, not per second.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jointmon.const import FRAME_DURATION_S  # noqa: E402
from jointmon.frames import Frame  # noqa: E402
from jointmon.topics import DataTopic  # noqa: E402

TARGET_STREAMS_PER_CORE = 200
DEFAULT_DIR = Path("/tmp/ss")
DEFAULT_STREAMS = (1, 4, 16, 64)
TICK_S = FRAME_DURATION_S  # the gateway publishes ~50 ms frames: the analysis sees them at this pace
WARM_UP_S = 3.0  # one stream run untimed before each measurement


@dataclass(frozen=True, slots=True)
class Item:
    """One frame of one recorded knee: ``tick`` = 50 ms tick of session time in which its last sample falls."""

    tick: int
    sensor: str
    stream: str
    frame: Frame


def default_recordings(folder: Path = DEFAULT_DIR, n: int = 4) -> list[Path]:
    """The first ``n`` knee recordings of the standard set in ``folder`` (knee per its scenario TOML)."""
    import tomllib

    out = []
    for rec in sorted(folder.glob("*.jmrec")):
        scenario = rec.with_suffix(".toml")
        if scenario.is_file() and "knee" in str(tomllib.loads(scenario.read_text()).get("joint", "")):
            out.append(rec)
        if len(out) == n:
            break
    return out


def merge_frames(frames: list[Frame], per_block: int) -> list[Frame]:
    """Consecutive frames of one stream joined ``per_block`` at a time (a what-if: a gateway publishing longer
    frames); a frame after a gap (index jump, flag, rate change) starts a new block. frame_seq renumbered."""
    if per_block <= 1:
        return frames
    out: list[Frame] = []
    block: list[Frame] = []

    def close() -> None:
        if block:
            f = block[0]
            out.append(Frame(f.stream, len(out), f.first_index, f.t0_ns, f.rate_hz, f.scale,
                             np.concatenate([b.samples for b in block]), f.flags))
            block.clear()

    for f in frames:
        if block and (f.flags or f.rate_hz != block[-1].rate_hz
                      or f.first_index != block[-1].first_index + block[-1].count):
            close()
        block.append(f)
        if len(block) == per_block:
            close()
    close()
    return out


def load_knee(path: Path, mics: int, mic_sensor: str, seconds: float, per_block: int = 1) -> tuple[str, list[Item]]:
    """The frames of the knee recorded in ``path`` (first ``seconds`` of session), as :class:`Item` in arrival
    order. ``mics`` 1 keeps only ``mic_sensor``'s microphone. Returns (joint name, items)."""
    from jointmon.recording import read_recording
    from sensor_gateway.recorder import frames_from_recording

    per_stream: dict[tuple[str, str, str], list[Frame]] = {}
    for topic, frame in frames_from_recording(read_recording(path)):
        assert isinstance(topic, DataTopic) and isinstance(frame, Frame)
        if "knee" not in topic.joint or (mics == 1 and topic.stream == "mic" and topic.sensor != mic_sensor):
            continue
        per_stream.setdefault((topic.joint, topic.sensor, topic.stream), []).append(frame)
    if not per_stream:
        raise SystemExit(f"{path}: no knee frames")
    joints = {j for j, _, _ in per_stream}
    if len(joints) != 1:
        raise SystemExit(f"{path}: more than one knee ({', '.join(sorted(joints))})")
    start = min(f.t0_ns - round(f.first_index * 1e9 / f.rate_hz) for fs in per_stream.values() for f in fs[:1])
    items = []
    for (_, sensor, stream), frames in per_stream.items():
        for f in merge_frames(frames, per_block):
            end_s = (f.t0_ns + round(f.count * 1e9 / f.rate_hz) - start) / 1e9
            if end_s <= seconds:
                items.append(Item(int(end_s // TICK_S), sensor, stream, f))
    items.sort(key=lambda it: (it.tick, it.frame.t0_ns))
    return joints.pop(), items


class CountingSink:
    """A result sink that keeps nothing: counts events and angle samples (so results cost no memory)."""

    def __init__(self) -> None:
        self.events = 0
        self.angle_samples = 0

    def angles(self, key: object, t_ns: np.ndarray, angles: object) -> None:
        self.angle_samples += len(t_ns)

    def event(self, event: object) -> None:
        self.events += 1

    def close(self) -> None:
        pass


def schedule(knees: list[tuple[str, list[Item]]], n_streams: int) -> list[list[tuple[DataTopic, Frame]]]:
    """Per 50 ms tick, the (topic, frame) of every stream in arrival order; stream ``i`` is knee ``i mod R``."""
    ticks: list[list[tuple[DataTopic, Frame]]] = [[] for _ in range(1 + max(it.tick for _, k in knees for it in k))]
    for i in range(n_streams):
        joint, items = knees[i % len(knees)]
        athlete = f"bench-{i:04d}"
        topics = {(s, st): DataTopic(athlete, joint, s, st) for s in ("thigh", "shank") for st in ("imu", "mic")}
        for it in items:
            ticks[it.tick].append((topics[(it.sensor, it.stream)], it.frame))
    return ticks


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_streams(knees: list[tuple[str, list[Item]]], n_streams: int, seconds: float, *, progress: bool = True,
                use_tracemalloc: bool = False, profile: str | None = None) -> dict[str, float]:
    """Run ``n_streams`` knee pipelines over ``seconds`` of session, interleaved per tick; the figures."""
    from analysis.joint_router import JointRouter

    warm = JointRouter("warm-up", CountingSink())  # first-use costs (lazy imports, caches) out of the figures
    for tick in schedule(knees, 1)[:round(WARM_UP_S / TICK_S)]:
        for topic, frame in tick:
            warm.route(DataTopic("warm-up", topic.joint, topic.sensor, topic.stream), frame)
    del warm
    ticks = schedule(knees, n_streams)
    sink = CountingSink()
    router = JointRouter("bench", sink)
    frames = sum(len(t) for t in ticks)
    gc.collect()
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    rss0 = _rss_bytes()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for tick in tqdm(ticks, desc=f"{n_streams} stream(s)", unit="tick", disable=not progress, leave=False,
                     mininterval=0.5):
        for topic, frame in tick:
            router.route(topic, frame)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    gc.collect()
    mem = _rss_bytes() - rss0
    if use_tracemalloc:
        mem = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    router.finish()
    session_s = len(ticks) * TICK_S
    return {"streams": n_streams, "session_s": session_s, "frames": frames, "cpu_s": cpu, "wall_s": wall,
            "cpu_ms_per_stream_s": 1e3 * cpu / (n_streams * session_s),
            "wall_ms_per_stream_s": 1e3 * wall / (n_streams * session_s),
            "mem_mib_per_stream": mem / n_streams / 2**20, "events": sink.events,
            "dropped": sum(v for k, v in router.counters.items() if k.startswith("dropped")),
            "load_1min": os.getloadavg()[0]}


def table(rows: list[dict[str, float]], mics: int) -> str:
    base = rows[0]["cpu_ms_per_stream_s"]
    lines = [f"knee stream = 2 IMUs at 200 Hz + {mics} microphone(s) at 16 kHz, all detectors; "
             f"{rows[0]['session_s']:.0f} s of session per run",
             f"{'streams':>8}{'CPU ms/stream-s':>17}{'wall ms/stream-s':>18}{'streams/core':>14}"
             f"{'growth':>8}{'MiB/stream':>12}{'events':>8}{'frames/s':>10}"]
    for r in rows:
        lines.append(f"{r['streams']:>8}{r['cpu_ms_per_stream_s']:>17.2f}{r['wall_ms_per_stream_s']:>18.2f}"
                     f"{1e3 / r['cpu_ms_per_stream_s']:>14.1f}{r['cpu_ms_per_stream_s'] / base:>8.2f}"
                     f"{r['mem_mib_per_stream']:>12.2f}{r['events']:>8}{r['frames'] / r['cpu_s']:>10.0f}")
    worst = max(r["cpu_ms_per_stream_s"] for r in rows)
    per_core = 1e3 / worst
    verdict = "meets" if per_core >= TARGET_STREAMS_PER_CORE else "MISSES"
    lines.append(f"streams per core (worst row): {per_core:.1f}, {verdict} the target >= {TARGET_STREAMS_PER_CORE}; "
                 f"load average {max(r['load_1min'] for r in rows):.1f} on {os.cpu_count()} CPUs "
                 "(CPU time is this process's own)")
    return "\n".join(lines)


def _is_project(file: str) -> bool:
    return file.startswith(str(REPO) + "/") and "/.venv/" not in file


def profile_by_file(path: str, top: int = 25) -> str:
    """A cProfile dump as the time of each project file and function, counting the library calls (NumPy, SciPy,
    builtins) it makes itself: a library function's own time goes to its project callers, split by how much of
    its cumulative time each caller took. So a file's figure is what that file's code costs, as text."""
    import pstats

    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    shares: dict[tuple[str, int, str], dict[tuple[str, int, str], float]] = {}  # fn -> {project fn: fraction}

    def share_of(fn: tuple[str, int, str], seen: frozenset = frozenset()) -> dict[tuple[str, int, str], float]:
        if _is_project(fn[0]):
            return {fn: 1.0}
        if fn in shares:
            return shares[fn]
        callers = {c: e for c, e in stats.get(fn, (0, 0, 0, 0, {}))[4].items() if c not in seen}
        weight = sum(edge[3] for edge in callers.values())
        out: dict[tuple[str, int, str], float] = {}
        if not callers or weight <= 0:
            out = {("(no project caller)", 0, fn[2]): 1.0}
        else:
            for caller, edge in callers.items():
                for pfn, frac in share_of(caller, seen | {fn}).items():
                    out[pfn] = out.get(pfn, 0.0) + frac * edge[3] / weight
        if not seen:  # a result computed without cut cycles is the same for every later caller
            shares[fn] = out
        return out

    per_fn: dict[tuple[str, int, str], float] = {}
    for fn, (_cc, _nc, tt, _ct, _callers) in stats.items():
        for pfn, frac in share_of(fn).items():
            per_fn[pfn] = per_fn.get(pfn, 0.0) + tt * frac
    per_file: dict[str, float] = {}
    for (file, _line, _name), t in per_fn.items():
        f = file.replace(str(REPO) + "/", "")
        per_file[f] = per_file.get(f, 0.0) + t
    lines = [f"profile: {total:.2f} s in total (cProfile adds overhead to every call); time of each file's own code "
             "with the NumPy/SciPy calls it makes",
             f"{'file':<44}{'s':>8}{'share':>8}"]
    for f, t in sorted(per_file.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{f:<44}{t:>8.2f}{t / total:>8.1%}")
    lines.append(f"{'function':<60}{'s':>8}{'share':>8}{'calls':>8}")
    for fn, t in sorted(per_fn.items(), key=lambda kv: -kv[1])[:top]:
        name = f"{fn[0].replace(str(REPO) + '/', '')}:{fn[1]} {fn[2]}"
        lines.append(f"{name[:60]:<60}{t:>8.2f}{t / total:>8.1%}{stats.get(fn, (0, 0))[1]:>8}")
    return "\n".join(lines)


def _child(args: argparse.Namespace) -> int:
    logging.getLogger("jointmon.gateway").setLevel(logging.ERROR)  # the recordings' link faults: known, not news
    knees = [load_knee(Path(p), args.mics, args.mic_sensor, args.seconds, args.frames_per_block)
             for p in args.recordings]
    result = run_streams(knees, args.child, args.seconds, progress=not args.no_progress,
                         use_tracemalloc=args.tracemalloc, profile=args.profile)
    print(json.dumps(result), flush=True)
    return 0


def _runs(args: argparse.Namespace, counts: list[int]) -> Iterator[dict[str, float]]:
    for n in counts:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--seconds", str(args.seconds),
               "--mics", str(args.mics), "--mic-sensor", args.mic_sensor,
               "--frames-per-block", str(args.frames_per_block), *map(str, args.recordings)]
        cmd += ["--no-progress"] if args.no_progress else []
        cmd += ["--tracemalloc"] if args.tracemalloc else []
        cmd += ["--profile", args.profile] if args.profile and n == counts[0] else []
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"the run with {n} stream(s) failed (exit {out.returncode})")
        yield json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Prints a table; exit 1 if below target.",
                                epilog="See the module docstring (bench/analysis_throughput.py) for what is measured.")
    p.add_argument("recordings", nargs="*", type=Path, metavar="FILE.jmrec",
                   help=f"knee recordings to replay [the first 4 knee recordings in {DEFAULT_DIR}]")
    p.add_argument("--streams", default=",".join(map(str, DEFAULT_STREAMS)),
                   help="comma-separated stream counts, each run in its own process [%(default)s]")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of session per run [%(default)s]")
    p.add_argument("--mics", type=int, choices=(1, 2), default=1,
                   help="microphones per knee stream [%(default)s: the issue's knee stream; 2 = as recorded]")
    p.add_argument("--mic-sensor", default="shank", choices=("thigh", "shank"),
                   help="whose microphone with --mics 1 [%(default)s]")
    p.add_argument("--frames-per-block", type=int, default=1, metavar="K",
                   help="what-if: join K consecutive 50 ms frames per stream (a gateway publishing K x 50 ms "
                   "frames; adds latency) [%(default)s: as published]")
    p.add_argument("--tracemalloc", action="store_true", help="memory as bytes traced by tracemalloc (slower) "
                   "instead of the RSS growth")
    p.add_argument("--profile", metavar="FILE", help="cProfile the first stream count into FILE and print the own "
                   "time per source file")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.recordings:
        args.recordings = default_recordings()
        if not args.recordings:
            p.error(f"no knee recordings in {DEFAULT_DIR}: run .venv/bin/python bench/standard_set.py --out "
                    f"{DEFAULT_DIR}, or name recordings")
    missing = [str(r) for r in args.recordings if not r.is_file()]
    if missing:
        p.error(f"no such recording: {', '.join(missing)}")
    if args.child:
        return _child(args)
    try:
        counts = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    except ValueError:
        p.error(f"--streams {args.streams!r}: comma-separated integers")
    if not counts or counts[0] < 1:
        p.error("--streams: at least one count >= 1")
    print(f"recordings: {', '.join(r.name for r in args.recordings)}", file=sys.stderr)
    rows = []
    for row in tqdm(_runs(args, counts), total=len(counts), desc="runs", unit="run", disable=args.no_progress):
        rows.append(row)
    print(table(rows, args.mics))
    if args.profile:
        print(profile_by_file(args.profile))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "mics": args.mics,
                                               "recordings": [str(r) for r in args.recordings]}, indent=1))
    return 0 if 1e3 / max(r["cpu_ms_per_stream_s"] for r in rows) >= TARGET_STREAMS_PER_CORE else 1


if __name__ == "__main__":
    sys.exit(main())
