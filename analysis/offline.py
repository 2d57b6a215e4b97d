"""Offline analysis: a session folder or a recording through the live analysis code, no MQTT.

Frames go through :class:`analysis.joint_router.JointRouter`, the same dispatch the MQTT
service uses, so offline and live results agree. Events come out as JSON lines.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from analysis.joint_router import JointRouter
from analysis.knee_pipeline import KneeSettings
from analysis.rep_counter import Rep
from analysis.result_sink import JointKey
from analysis.session_folder import SESSION_FILE, frames_from_session_folder, read_session_folder
from jointmon.errors import JointmonError
from jointmon.frames import Frame, encode_frame
from jointmon.messages import JointEvent
from jointmon.topics import DataTopic

RECORDING_SUFFIX = ".jmrec"

FrameItem = tuple[DataTopic | str, Frame | bytes]


class _Collector:
    """Result sink that keeps everything in memory (an offline run is bounded)."""

    def __init__(self) -> None:
        self.events: list[JointEvent] = []
        self._angles: dict[tuple[str, str], tuple[list[np.ndarray], dict[str, list[np.ndarray]]]] = {}
        self._n_angles: dict[tuple[str, str], int] = {}  # samples so far per joint (summing the blocks was O(n^2))

    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        ts, series = self._angles.setdefault((key.athlete, key.joint), ([], {}))
        n_before = self._n_angles.get((key.athlete, key.joint), 0)
        ts.append(np.asarray(t_ns, np.int64))
        self._n_angles[(key.athlete, key.joint)] = n_before + ts[-1].size
        for name in set(series) | set(angles):  # a name missing from a block is NaN there
            parts = series.setdefault(name, [np.full(n_before, np.nan)] if n_before else [])
            parts.append(np.asarray(angles[name], float) if name in angles else np.full(len(t_ns), np.nan))

    def event(self, event: JointEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def angle_series(self) -> dict[tuple[str, str], tuple[np.ndarray, dict[str, np.ndarray]]]:
        return {k: (np.concatenate(ts), {name: np.concatenate(p) for name, p in series.items()})
                for k, (ts, series) in self._angles.items()}


@dataclass
class OfflineResult:
    """Everything one offline run found.

    ``events`` in time order; ``angles[(athlete, joint)]`` = (t_ns Unix ns, {angle name: deg}) at
    the angle store rate; ``reps[(athlete, joint)]``; ``origin_ns`` the wall time of t_s = 0;
    ``duration_s`` the time span of the analysed streams (s).
    """

    session: str
    events: list[JointEvent]
    angles: dict[tuple[str, str], tuple[np.ndarray, dict[str, np.ndarray]]]
    reps: dict[tuple[str, str], list[Rep]]
    counters: dict[str, int]
    samples: dict[str, int]
    origin_ns: int
    duration_s: float
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def event_t_s(self, event: JointEvent) -> float:
        """Seconds since the session start (``origin_ns``) of an event's onset."""
        return (event.t_ns - self.origin_ns) / 1e9

    def counts_by_type(self) -> Counter[str]:
        return Counter(e.type for e in self.events)

    def event_record(self, e: JointEvent) -> dict[str, Any]:
        """One JSON-lines record. ``t_s`` is seconds since the session start; for a session folder it
        equals the event's ``stream_t_s`` for clicks (every stream starts at t_s = 0), and it is also
        right for reps, whose ``stream_t_s`` the pipeline leaves at 0."""
        return {"t_s": round(self.event_t_s(e), 6), "type": e.type, "joint": e.joint, "confidence": e.confidence,
                "magnitude": e.magnitude, "sensor": e.sensor, "athlete": e.athlete, "session": e.session,
                "t_ns": e.t_ns, "stream_t_s": e.stream_t_s, "details": e.details}

    def json_lines(self) -> Iterator[str]:
        for e in self.events:
            yield json.dumps(self.event_record(e), separators=(",", ":"))

    def summary(self) -> str:
        counts = self.counts_by_type()
        per_type = ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "no events"
        problems = {k: v for k, v in self.counters.items() if (k.startswith("dropped") or k == "frames_missing") and v}
        joints = ", ".join(f"{a}/{j}" for a, j in sorted({(e.athlete, e.joint) for e in self.events})) or "-"
        text = (f"{self.source or self.session}: analysed {self.duration_s:.2f} s "
                f"({sum(self.samples.values()):,} samples in {self.counters.get('frames', 0):,} frames); "
                f"{per_type}; joints {joints}")
        return text + (f"; problems {problems}" if problems else "")


def analyze_frames(frames: Iterable[FrameItem], session: str, settings: KneeSettings | None = None, *,
                   origin_ns: int | None = None) -> OfflineResult:
    """Run the analysis on ``frames`` ((topic, frame) in time order, as the gateway publishes them),
    one :class:`KneePipeline` per (athlete, joint), and finish every pipeline at the end.

    A topic may be a :class:`DataTopic` or a topic string, a frame a :class:`Frame` or its encoded
    payload (bytes are decoded and checked like MQTT messages; bad ones are counted, not raised).
    ``origin_ns`` is the wall time of t_s = 0; by default the earliest stream start.
    """
    sink = _Collector()
    router = JointRouter(session, sink, settings)
    for topic, frame in frames:
        if isinstance(topic, DataTopic) and isinstance(frame, Frame):
            router.route(topic, frame)
        else:  # a recording's raw message: parsed, decoded and checked like one from MQTT
            router.handle_message(str(topic), encode_frame(frame) if isinstance(frame, Frame) else bytes(frame))
    router.finish()
    start = router.first_ns if router.first_ns is not None else 0
    origin = start if origin_ns is None else origin_ns
    duration = (router.end_ns - min(origin, start)) / 1e9 if router.end_ns is not None else 0.0
    events = sorted(sink.events, key=lambda e: (e.t_ns, e.type))
    reps = {key: list(p.reps) for key, p in router.pipelines.items()}
    return OfflineResult(session, events, sink.angle_series(), reps, dict(router.counters), dict(router.samples),
                         origin, duration)


def _reporting(frames: Iterable[Any], start_ns: int, total_s: float,
               on_progress: Callable[[float, float], None] | None) -> Iterable[Any]:
    """``frames`` unchanged, calling ``on_progress(done_s, total_s)`` about once per session second."""
    if on_progress is None:
        return frames

    def reported() -> Iterator[Any]:
        next_s = 0.0
        for item in frames:
            t_s = (item[1].t0_ns - start_ns) / 1e9
            if t_s >= next_s:
                on_progress(min(max(t_s, 0.0), total_s), total_s)
                next_s = t_s + 1.0
            yield item
        on_progress(total_s, total_s)

    return reported()


def analyze_path(path: str | Path, settings: KneeSettings | None = None, *,
                 on_progress: Callable[[float, float], None] | None = None) -> OfflineResult:
    """Analyse a session folder (a folder with session.toml) or a ``.jmrec`` recording.

    ``on_progress(seconds_done, seconds_total)`` (session seconds) is called about once per second of
    session analysed, for progress bars; it does not change the result."""
    p = Path(path)
    if p.is_dir():
        imported = read_session_folder(p)
        total = max((float(s.t_s[-1]) for s in imported.sensors.values() if s.t_s.size), default=0.0)
        frames = _reporting(frames_from_session_folder(imported), imported.start_ns, total, on_progress)
        result = analyze_frames(frames, imported.session, settings, origin_ns=imported.start_ns)
        result.extra["labels"] = imported.labels
    elif p.suffix == RECORDING_SUFFIX and p.is_file():
        from jointmon.recording import read_recording, t0_wall_ns  # lazy: zip/npz readers only when needed
        from sensor_gateway.recorder import frames_from_recording

        # The notifications go through the gateway's decoder and clock map again, as they did live. Session
        # time 0 is the recording's t0 (the labels' time axis), not the first sample's arrival.
        recording = read_recording(p)
        origin = t0_wall_ns(recording)
        start = origin if origin is not None else (recording.first_arrival_ns or 0)
        frames = _reporting(frames_from_recording(recording), start, recording.duration_s, on_progress)
        result = analyze_frames(frames, str(recording.session or p.stem), settings, origin_ns=origin)
        result.extra["recording"] = recording  # labels, truth and notes, for the evaluation harness
    elif not p.exists():
        raise JointmonError(f"{p}: no such file or folder")
    else:
        raise JointmonError(f"{p}: not a session folder (a folder with {SESSION_FILE}) "
                            f"or a {RECORDING_SUFFIX} recording")
    result.source = str(p)
    return result


def write_json_lines(result: OfflineResult, out: TextIO) -> int:
    """Write one JSON line per event to ``out``; return the number written."""
    n = 0
    for line in result.json_lines():
        out.write(line + "\n")
        n += 1
    return n


def run_offline(path: str | Path, out: str | Path | None = None,
                on_result: Callable[[OfflineResult], None] | None = None) -> int:
    """``jointmon analyze PATH``: events as JSON lines to ``out`` (or stdout), a summary to stderr;
    then ``on_result(result)`` if given (the CLI's red-flag grading)."""
    result = analyze_path(path)
    if out is None:
        write_json_lines(result, sys.stdout)
        sys.stdout.flush()
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with Path(out).open("w", encoding="utf-8") as f:
            write_json_lines(result, f)
    print(result.summary() + (f"; events written to {out}" if out else ""), file=sys.stderr)
    if on_result is not None:
        on_result(result)
    return 0
