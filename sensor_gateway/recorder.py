"""Recording a gateway's input, and decoding a recording offline with the gateway's own code.

* :class:`GatewayRecorder` is the tap given to ``Gateway(..., recorder=...)``: every notification
  (bad ones too, before decoding) is appended to a :mod:`jointmon.recording` file with the arrival
  time the gateway used, so a replay reproduces the gateway's frames bit for bit.
* :func:`frames_from_recording` runs the gateway's per-sensor path (:class:`SensorDecoder`) over a
  recording without MQTT: the frames the live gateway published, in the same order.
* :func:`record_simulated_session` streams a simulated session through the gateway into a recording
  (``jointmon record``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from jointmon.errors import PacketError
from jointmon.frames import Frame, Gap
from jointmon.packets import StreamType, decode_packet
from jointmon.recording import FLAG_LINK_TIME, RecordedSensor, Recording, RecordingWriter
from jointmon.topics import DataTopic
from sensor_gateway.gateway import FramePublisher, Gateway, SensorBinding, SensorDecoder

log = logging.getLogger("jointmon.gateway.recorder")
_STREAM_TYPES = {"imu": StreamType.IMU, "mic": StreamType.MIC_PCM16}


class GatewayRecorder:
    """A :class:`sensor_gateway.gateway.GatewayTap` writing a recording to ``path``.

    The gateway calls :meth:`attach` with its bindings (the sensor list comes from them), then
    :meth:`on_notification` per notification. Labels, truth and metadata can be added until
    :meth:`close`, which writes the file. Usable as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = dict(meta or {})
        self.writer: RecordingWriter | None = None
        self._bindings: list[SensorBinding] = []
        self._pending: dict[str, Any] = {}  # labels/truth set before attach
        self._seen: set[tuple[int, str]] = set()

    def attach(self, bindings: Sequence[SensorBinding]) -> None:
        if self.writer is not None:
            raise RuntimeError(f"{self.path}: a recorder taps one gateway only")
        self._bindings = list(bindings)
        sensors = [RecordedSensor(i, b.link.name, b.link.address, b.athlete, b.joint, b.sensor, _describe(b.link))
                   for i, b in enumerate(self._bindings)]
        self.writer = RecordingWriter(self.path, sensors=sensors, meta=self.meta)
        if "labels" in self._pending:
            self.writer.set_labels(self._pending["labels"])
        if "truth" in self._pending:
            self.writer.set_truth(self._pending["truth"])

    def _writer(self) -> RecordingWriter:
        if self.writer is None:
            raise RuntimeError(f"{self.path}: recorder not attached to a gateway")
        return self.writer

    def on_notification(self, sensor_index: int, stream: str, arrival_ns: int, data: bytes,
                        link_time: bool = False) -> None:
        writer = self._writer()
        writer.add_packet(sensor_index, stream, arrival_ns, data, flags=FLAG_LINK_TIME if link_time else 0)
        if (sensor_index, stream) not in self._seen:
            self._learn(writer.sensors[sensor_index].info, sensor_index, stream, data)

    def _learn(self, info: dict[str, Any], index: int, stream: str, data: bytes) -> None:
        """Note a stream's rate and range (or the first status) from its first good notification."""
        try:
            if stream == "status":
                info["status"] = json.loads(data)
            else:
                pkt = decode_packet(data)
                info.setdefault(f"{stream}_rate_hz", pkt.rate_hz)
                info.setdefault(f"{stream}_range_code", pkt.range_code)
        except (PacketError, ValueError, UnicodeDecodeError):
            return  # a bad first packet: try the next one
        self._seen.add((index, stream))

    def on_link_event(self, sensor_index: int, event: str, t_ns: int) -> None:
        self._writer().add_link_event(sensor_index, event, t_ns)

    def set_labels(self, labels: list[Mapping[str, Any]]) -> None:
        if self.writer is None:
            self._pending["labels"] = labels
        else:
            self.writer.set_labels(labels)

    def set_truth(self, arrays: Mapping[str, np.ndarray]) -> None:
        if self.writer is None:
            self._pending["truth"] = arrays
        else:
            self.writer.set_truth(arrays)

    def update_meta(self, **meta: Any) -> None:
        self.meta.update(meta)
        if self.writer is not None:
            self.writer.update_meta(**meta)

    def close(self) -> None:
        """Write the file (names and addresses as the links know them now: BLE learns them at connect)."""
        if self.writer is None:
            return
        for s, b in zip(self.writer.sensors, self._bindings, strict=True):
            s.name, s.address = b.link.name, b.link.address
        self.writer.close()

    def __enter__(self) -> GatewayRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _describe(link: object) -> dict[str, Any]:
    describe = getattr(link, "describe", None)
    return dict(describe()) if callable(describe) else {}


class FrameCollector:
    """A :class:`FramePublisher` without a broker: counts frames (and keeps them if ``keep``)."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.frames: list[tuple[DataTopic, Frame]] = []
        self.gaps: list[tuple[DataTopic, Gap]] = []
        self.counters: Counter[str] = Counter()
        self.extra_counters: Counter[str] = Counter()

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        self.counters["frames_published"] += 1
        self.counters["samples_published"] += frame.count
        if self.keep:
            self.frames.append((topic, frame))

    def publish_status(self, state: str) -> None:
        pass

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        self.counters["gaps_published"] += 1
        if self.keep:
            self.gaps.append((topic, gap))


def frames_from_recording(recording: Recording, *, offset_ns: int = 0,
                          counters: Counter[str] | None = None) -> Iterator[tuple[DataTopic, Frame]]:
    """The frames the gateway published for ``recording``, in the same order, without MQTT.

    Runs one :class:`SensorDecoder` per recorded sensor over the packets in file order, flushing a
    sensor where its link ended (as the live gateway did). ``offset_ns`` is added to every arrival
    time (frame times shift by exactly that). ``counters``, if given, receives the gateway counters
    (packets_received, rejected_*, lost_packets, gap_samples, restarts, ...) when iteration ends.
    """
    total: Counter[str] = Counter()
    decoders = {s.index: SensorDecoder(s.athlete, s.joint, s.segment, name=s.name, counters=total)
                for s in recording.sensors}
    for arrival_ns, index, stream, data in recording.packets(link_events=True):
        decoder = decoders.get(index)
        if decoder is None:
            continue
        if stream in _STREAM_TYPES:
            yield from decoder.push(_STREAM_TYPES[stream], data, arrival_ns + offset_ns)
        elif stream == "link" and data == b"end":
            yield from decoder.flush()
    for decoder in decoders.values():  # a recording cut short has no end marker: flush like the gateway would
        yield from decoder.flush()
    if counters is not None:
        counters.update(total)
        for decoder in decoders.values():
            counters.update(decoder.stream_counters())


# ---------------------------------------------------------------- simulated sessions


def labels_from_session(sim: Any) -> list[dict[str, Any]]:
    """A simulated session's labels as plain dicts (type, joint, t_start_s, t_end_s, magnitude, ...)."""
    return [dataclasses.asdict(lb) if dataclasses.is_dataclass(lb) else dict(lb) for lb in sim.labels]


def truth_from_session(sim: Any) -> dict[str, np.ndarray]:
    """Every numeric ``truth_*`` series of a simulated session: ``t_s``, ``flexion_deg``, ... The joint
    angles dict (``truth_angles``) gives plain names (``abduction_deg``, ``rotation_deg``, ...); other
    per-sensor or per-segment dicts become ``<name>.<key>`` (e.g. ``pitch_deg.thigh``)."""
    out: dict[str, np.ndarray] = {}
    names = [f.name for f in dataclasses.fields(sim)] if dataclasses.is_dataclass(sim) else list(vars(sim))
    for name in names:
        if not name.startswith("truth_"):
            continue
        value, key = getattr(sim, name), name.removeprefix("truth_")
        if isinstance(value, Mapping):
            for k, v in value.items():
                arr = np.asarray(v)
                if arr.dtype.kind not in "biuf":
                    continue
                if key == "angles" and (k not in out or np.array_equal(out[k], arr)):
                    out[k] = arr
                else:
                    out[f"{key}.{k}"] = arr
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[key] = value
    return out


def session_meta(sim: Any) -> dict[str, Any]:
    """What a recording notes about a simulated session."""
    meta: dict[str, Any] = {"source": "simulated"}
    for key in ("athlete", "joint", "duration_s", "seed", "rep_count", "exercise", "profile"):
        value = getattr(sim, key, None)
        if isinstance(value, str | int | float):
            meta[key] = value
    scenario = getattr(sim, "scenario", None)
    if scenario is not None:
        meta["scenario"] = str(getattr(scenario, "source", scenario))
    link = getattr(sim, "link", None)
    if link:
        meta["link"] = dict(link)
    return meta


@dataclass
class RecordSummary:
    path: Path
    packets: int
    frames_published: int
    samples_published: int
    gateway_counters: dict[str, int]
    wall_s: float


def record_simulated_session(sim: Any, path: str | os.PathLike[str], *, publisher: FramePublisher | None = None,
                             realtime: bool = False, speed: float = 1.0, gateway_id: str = "gw-sim",
                             meta: Mapping[str, Any] | None = None,
                             on_progress: Callable[[float], None] | None = None) -> RecordSummary:
    """Stream ``sim`` through a gateway (to ``publisher``, or nowhere) and record it to ``path`` with its
    labels and truth. ``on_progress(session_seconds_streamed)`` is called about 5 times a second."""
    from jointmon.live_session import make_peripherals  # lazy: live_session pulls in the analysis
    from sensor_gateway.sim_link import SimLink

    peripherals = make_peripherals(sim, realtime=realtime, speed=speed)
    bindings = [SensorBinding(SimLink(p), sim.athlete, sim.joint, name, status=True)
                for name, p in peripherals.items()]
    sink = publisher if publisher is not None else FrameCollector()
    t_start = time.monotonic()
    start_ns = time.time_ns()
    for p in peripherals.values():  # one session clock for every sensor: label times map to one wall time
        p.start_wall_ns = start_ns
    with GatewayRecorder(path, meta={**session_meta(sim), "gateway_id": gateway_id, "t0_wall_ns": start_ns,
                                     "realtime": realtime, **(meta or {})}) as recorder:
        gateway = Gateway(sink, bindings, recorder=recorder)
        rate = min(p.signals.mic_rate_hz for p in peripherals.values())

        async def main() -> None:
            run = asyncio.create_task(gateway.run())
            while not run.done():
                if on_progress:
                    on_progress(min(p.samples_sent["mic"] for p in peripherals.values()) / rate)
                await asyncio.wait([run], timeout=0.2)
            await run

        asyncio.run(main())
        recorder.update_meta(t0_wall_ns=min(p.start_wall_ns or start_ns for p in peripherals.values()))
        recorder.set_labels(labels_from_session(sim))
        recorder.set_truth(truth_from_session(sim))
        n_packets = recorder.writer.n_packets if recorder.writer else 0
    counters = getattr(sink, "counters", Counter())
    return RecordSummary(Path(path), n_packets, counters["frames_published"], counters["samples_published"],
                         dict(gateway.counters + gateway.stream_counters()), time.monotonic() - t_start)
