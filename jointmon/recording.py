"""Session recordings: every BLE notification a gateway received, losslessly, in one file.

The format is specified byte for byte in ``docs/recording-format.md``. In short: a ZIP file
(``.jmrec``) holding

* ``recording.json``: format name and version, metadata (gateway, session-time mapping, scenario,
  seed, ...), the sensors (name, address, athlete, joint, segment, info), the labels (ground truth
  events, session seconds) and a summary of the packets;
* ``packets.bin`` (stored uncompressed, so it streams fast): a 16-byte file header, then one record
  per notification in arrival order: a 16-byte record header (arrival time, sensor, stream, flags,
  length) followed by the notification's raw bytes;
* ``truth.npz`` (optional): ground-truth series (``t_s``, ``flexion_deg``, ...) as numpy arrays.

:class:`RecordingWriter` streams packets to a temporary file next to the output, so a gateway can
record for hours in constant memory; :meth:`RecordingWriter.close` assembles the ZIP and renames it
into place. :func:`read_recording` opens a file; :meth:`Recording.packets` streams the packets back.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from jointmon import __version__
from jointmon.errors import RecordingError

FORMAT_NAME = "jointmon-recording"
FORMAT_VERSION = 1
SUFFIX = ".jmrec"
JSON_MEMBER = "recording.json"
PACKETS_MEMBER = "packets.bin"
TRUTH_MEMBER = "truth.npz"

# packets.bin: file header (magic, version, record header size), then records.
FILE_MAGIC = b"JMPACKET"
FILE_HEADER = struct.Struct("<8sII")  # 16 bytes
RECORD_HEADER = struct.Struct("<qHBBHH")  # arrival_ns, sensor, stream, flags, length, reserved: 16 bytes
MAX_RECORD_BYTES = 0xFFFF  # the length field is u16; a BLE notification is at most 512 bytes anyway

# Stream codes: 1 and 2 are the packet stream types (jointmon.packets.StreamType); 3 is the status
# characteristic's JSON; 255 marks the gateway's link events ("start", "end") for an exact replay.
STREAM_CODES = {"imu": 1, "mic": 2, "status": 3, "link": 255}
STREAM_NAMES = {v: k for k, v in STREAM_CODES.items()}
NOTIFY_STREAMS = ("imu", "mic", "status")
FLAG_LINK_TIME = 0x01  # the arrival time came from the link (simulator, replay), not the gateway's clock

_READ_CHUNK = 1 << 20


@dataclass
class RecordedSensor:
    """One sensor of a recording. ``index`` is what packet records refer to; ``info`` is free-form
    (rates in Hz, range codes, battery %, firmware, simulated faults, ...)."""

    index: int
    name: str  # advertised name
    address: str  # BLE address (or the simulator's)
    athlete: str  # pseudonym
    joint: str  # e.g. "left_knee"
    segment: str  # "thigh", "shank", ...: the sensor level of the MQTT topic
    info: dict[str, Any] = field(default_factory=dict)


def _jsonable(obj: object) -> object:
    """json.dumps default: numpy scalars and arrays become plain numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: object, what: str) -> str:
    try:
        # allow_nan=False: NaN/Infinity are not JSON; other readers of the file would choke on them.
        return json.dumps(obj, default=_jsonable, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from None


class RecordingWriter:
    """Writes one recording (see the module docstring). Not thread-safe: call from one thread.

    ``sensors`` and ``meta`` may be updated until :meth:`close` (e.g. a BLE address learnt at connect).
    As a context manager it closes on exit, also after an exception: what was received is kept.
    """

    def __init__(self, path: str | os.PathLike[str], *, sensors: list[RecordedSensor],
                 meta: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.sensors = list(sensors)
        self.meta: dict[str, Any] = dict(meta or {})
        self.labels: list[dict[str, Any]] = []
        self.truth: dict[str, np.ndarray] = {}
        self.n_records = 0
        self.n_packets = 0  # notifications (link events excluded)
        self.counts: Counter[tuple[int, str]] = Counter()
        self.first_arrival_ns: int | None = None
        self.last_arrival_ns: int | None = None
        self._created_ns = time.time_ns()
        self._closed = False
        # Packets go to a temporary file first, so hours of data never sit in memory; a crash leaves
        # it behind with the documented packets.bin layout (salvageable).
        self._tmp_path = self.path.with_name(self.path.name + ".packets.part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = open(self._tmp_path, "wb", buffering=_READ_CHUNK)  # noqa: SIM115 (closed in close())
            self._tmp.write(FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, RECORD_HEADER.size))
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc}") from exc

    def add_packet(self, sensor_index: int, stream: str, arrival_ns: int, data: bytes, *, flags: int = 0) -> None:
        """Append one notification of ``stream`` ("imu" | "mic" | "status") received at ``arrival_ns`` (Unix ns)."""
        if self._closed:
            raise RecordingError(f"{self.path}: add_packet after close")
        code = STREAM_CODES.get(stream)
        if code is None:
            raise ValueError(f"unknown stream {stream!r} (known: {', '.join(STREAM_CODES)})")
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"{len(data)}-byte record does not fit the u16 length field")
        self._tmp.write(RECORD_HEADER.pack(arrival_ns, sensor_index, code, flags, len(data), 0))
        self._tmp.write(data)
        self.n_records += 1
        self.counts[(sensor_index, stream)] += 1
        if stream != "link":
            self.n_packets += 1
            if self.first_arrival_ns is None:
                self.first_arrival_ns = arrival_ns
            self.last_arrival_ns = arrival_ns if self.last_arrival_ns is None else max(self.last_arrival_ns, arrival_ns)

    def add_link_event(self, sensor_index: int, event: str, t_ns: int) -> None:
        """Record a gateway link event (``"start"``: streaming requested; ``"end"``: the link ended and
        the gateway flushed that sensor's frames) at ``t_ns`` (Unix ns)."""
        self.add_packet(sensor_index, "link", t_ns, event.encode("ascii"))

    def set_labels(self, labels: list[Mapping[str, Any]]) -> None:
        """Ground-truth events: dicts with at least ``type`` and ``t_start_s`` (session seconds)."""
        out = []
        for i, lb in enumerate(labels):
            lb = dict(lb)
            if not isinstance(lb.get("type"), str) or not isinstance(lb.get("t_start_s"), int | float | np.number):
                raise ValueError(f"label {i}: needs a string 'type' and a number 't_start_s', got {lb}")
            out.append(lb)
        _dumps(out, "labels")  # fail now, not at close
        self.labels = out

    def set_truth(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Ground-truth series (numeric arrays, e.g. ``t_s`` and ``flexion_deg``), stored in truth.npz."""
        out = {}
        for name, a in arrays.items():
            arr = np.asarray(a)
            if not name or "/" in name or arr.dtype.kind not in "biuf":  # no pickled objects in the file
                raise ValueError(f"truth array {name!r}: needs a name without '/' and a numeric dtype, got {arr.dtype}")
            out[name] = arr
        self.truth = out

    def update_meta(self, **meta: Any) -> None:
        self.meta.update(meta)

    def _document(self, packets_bytes: int) -> dict[str, Any]:
        per_sensor: dict[str, dict[str, int]] = {}
        for (index, stream), n in sorted(self.counts.items()):
            per_sensor.setdefault(str(index), {})[stream] = n
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created_ns": self._created_ns,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._created_ns / 1e9)),
            "writer": f"jointmon {__version__}",
            "meta": self.meta,
            "sensors": [asdict(s) for s in self.sensors],
            "labels": self.labels,
            "packets": {
                "member": PACKETS_MEMBER, "bytes": packets_bytes, "records": self.n_records,
                "notifications": self.n_packets, "first_arrival_ns": self.first_arrival_ns,
                "last_arrival_ns": self.last_arrival_ns, "per_sensor": per_sensor,
            },
            "truth": ({"member": TRUTH_MEMBER, "arrays": {k: list(v.shape) for k, v in self.truth.items()}}
                      if self.truth else None),
        }

    def close(self) -> None:
        """Assemble the ZIP next to ``path`` and rename it into place (readers never see half a file)."""
        if self._closed:
            return
        self._closed = True
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self._tmp.close()
            doc = _dumps(self._document(self._tmp_path.stat().st_size), "recording metadata")
            with zipfile.ZipFile(partial, "w", allowZip64=True) as zf:
                zf.writestr(JSON_MEMBER, doc, compress_type=zipfile.ZIP_DEFLATED)
                zf.write(self._tmp_path, PACKETS_MEMBER, compress_type=zipfile.ZIP_STORED)
                if self.truth:
                    buf = io.BytesIO()
                    np.savez_compressed(buf, **self.truth)
                    zf.writestr(TRUTH_MEMBER, buf.getvalue(), compress_type=zipfile.ZIP_STORED)
            os.replace(partial, self.path)
            self._tmp_path.unlink()
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc} "
                                 f"(packets kept in {self._tmp_path})") from exc

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class Recording:
    """A recording opened by :func:`read_recording`; packets are streamed from the file on demand."""

    path: Path
    meta: dict[str, Any]
    sensors: list[RecordedSensor]
    labels: list[dict[str, Any]]
    truth: dict[str, np.ndarray]
    n_packets: int  # notifications (link events excluded)
    n_records: int = 0  # every record of packets.bin, link events included
    packets_bytes: int = 0
    packet_counts: dict[int, dict[str, int]] = field(default_factory=dict)  # sensor index -> stream -> records
    first_arrival_ns: int | None = None
    last_arrival_ns: int | None = None
    created_ns: int = 0
    version: int = FORMAT_VERSION

    @property
    def session(self) -> str | None:
        """The session id, if the recorder noted one (``meta["session"]``)."""
        value = self.meta.get("session")
        return str(value) if value else None

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last notification's arrival."""
        if self.first_arrival_ns is None or self.last_arrival_ns is None:
            return 0.0
        return (self.last_arrival_ns - self.first_arrival_ns) / 1e9

    def sensor(self, index: int) -> RecordedSensor:
        for s in self.sensors:
            if s.index == index:
                return s
        raise KeyError(f"{self.path}: no sensor with index {index}")

    def packets(self, *, link_events: bool = False) -> Iterator[tuple[int, int, str, bytes]]:
        """``(arrival_ns, sensor_index, stream, data)`` per notification, in file (= arrival) order.

        ``stream`` is "imu", "mic" or "status"; with ``link_events=True`` also "link" records
        (data ``b"start"`` / ``b"end"``). Raises :class:`RecordingError` on a damaged file.
        """
        for arrival_ns, sensor, stream, _flags, data in self.records():
            if link_events or stream != "link":
                yield arrival_ns, sensor, stream, data

    def records(self) -> Iterator[tuple[int, int, str, int, bytes]]:
        """Every record: ``(arrival_ns, sensor_index, stream, flags, data)``; unknown stream codes are skipped."""
        n = 0
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(PACKETS_MEMBER) as f:
                _check_file_header(self.path, f.read(FILE_HEADER.size))
                buf, pos, offset = b"", 0, FILE_HEADER.size  # offset: file position of buf[pos]
                while True:
                    chunk = f.read(_READ_CHUNK)
                    buf, pos = buf[pos:] + chunk, 0
                    end = len(buf)
                    while end - pos >= RECORD_HEADER.size:
                        arrival_ns, sensor, code, flags, length, _ = RECORD_HEADER.unpack_from(buf, pos)
                        stop = pos + RECORD_HEADER.size + length
                        if stop > end:
                            break
                        stream = STREAM_NAMES.get(code)
                        if stream is not None:  # unknown codes: a later minor addition, skipped
                            yield arrival_ns, sensor, stream, flags, buf[pos + RECORD_HEADER.size : stop]
                        n += 1
                        offset += stop - pos
                        pos = stop
                    if not chunk:
                        break
                if pos != len(buf):
                    raise RecordingError(f"{self.path}: {PACKETS_MEMBER} truncated: record {n} at byte {offset} "
                                         f"is cut off ({len(buf) - pos} bytes left)")
        except zipfile.BadZipFile as exc:  # e.g. a CRC-32 mismatch found at the end of the member
            raise RecordingError(f"{self.path}: {PACKETS_MEMBER} is damaged: {exc}") from exc
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot read: {exc}") from exc
        if n != self.n_records:
            raise RecordingError(f"{self.path}: {PACKETS_MEMBER} holds {n} records, recording.json says "
                                 f"{self.n_records}")


def _check_file_header(path: Path, head: bytes) -> None:
    if len(head) < FILE_HEADER.size:
        raise RecordingError(f"{path}: {PACKETS_MEMBER} truncated: no file header")
    magic, version, rec_size = FILE_HEADER.unpack(head)
    if magic != FILE_MAGIC:
        raise RecordingError(f"{path}: {PACKETS_MEMBER} does not start with {FILE_MAGIC!r}")
    if version != FORMAT_VERSION or rec_size != RECORD_HEADER.size:
        raise RecordingError(f"{path}: {PACKETS_MEMBER} version {version} (record header {rec_size} bytes) "
                             f"is not supported (this jointmon reads version {FORMAT_VERSION})")


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RecordingError(f"{path}: {JSON_MEMBER}: {where}{key} missing or of the wrong type ({value!r})")
    return value


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Open and check a recording. Every problem raises :class:`RecordingError` naming the file:
    not a ZIP, a missing member, an unknown format or version, a truncated or damaged packets.bin."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for member in (JSON_MEMBER, PACKETS_MEMBER):
                if member not in names:
                    raise RecordingError(f"{path}: not a jointmon recording: missing member {member!r}")
            try:
                doc = json.loads(zf.read(JSON_MEMBER))
            except (ValueError, UnicodeDecodeError) as exc:
                raise RecordingError(f"{path}: {JSON_MEMBER}: invalid JSON ({exc})") from None
            if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
                fmt = doc.get("format") if isinstance(doc, dict) else None
                raise RecordingError(f"{path}: not a jointmon recording (format {fmt!r}, expected {FORMAT_NAME!r})")
            version = doc.get("version")
            if version != FORMAT_VERSION:
                raise RecordingError(f"{path}: recording format version {version!r} is not supported "
                                     f"(this jointmon reads version {FORMAT_VERSION})")
            packets = _get(doc, "packets", dict, path)
            expected = _get(packets, "bytes", int, path, "packets.")
            actual = zf.getinfo(PACKETS_MEMBER).file_size
            if actual != expected:
                raise RecordingError(f"{path}: {PACKETS_MEMBER} truncated: {actual} bytes, recording.json says "
                                     f"{expected}" if actual < expected else
                                     f"{path}: {PACKETS_MEMBER} has {actual} bytes, recording.json says {expected}")
            truth: dict[str, np.ndarray] = {}
            if doc.get("truth"):
                if TRUTH_MEMBER not in names:
                    raise RecordingError(f"{path}: not a jointmon recording: missing member {TRUTH_MEMBER!r}")
                with np.load(io.BytesIO(zf.read(TRUTH_MEMBER)), allow_pickle=False) as npz:
                    truth = {k: npz[k] for k in npz.files}
    except zipfile.BadZipFile as exc:
        raise RecordingError(f"{path}: not a jointmon recording (not a valid ZIP file: {exc})") from None
    except (OSError, ValueError) as exc:  # ValueError: a damaged truth.npz
        raise RecordingError(f"{path}: cannot read: {exc}") from exc

    sensors = []
    for i, s in enumerate(_get(doc, "sensors", list, path)):
        if not isinstance(s, dict):
            raise RecordingError(f"{path}: {JSON_MEMBER}: sensors[{i}] must be an object")
        try:
            sensors.append(RecordedSensor(**s))
        except TypeError as exc:
            raise RecordingError(f"{path}: {JSON_MEMBER}: sensors[{i}]: {exc}") from None
    labels = _get(doc, "labels", list, path)
    per_sensor = packets.get("per_sensor") or {}
    return Recording(
        path=path,
        meta=_get(doc, "meta", dict, path),
        sensors=sensors,
        labels=labels,
        truth=truth,
        n_packets=_get(packets, "notifications", int, path, "packets."),
        n_records=_get(packets, "records", int, path, "packets."),
        packets_bytes=expected,
        packet_counts={int(k): dict(v) for k, v in per_sensor.items()},
        first_arrival_ns=packets.get("first_arrival_ns"),
        last_arrival_ns=packets.get("last_arrival_ns"),
        created_ns=int(doc.get("created_ns") or 0),
        version=version,
    )


def t0_wall_ns(recording: Recording) -> int | None:
    """Wall clock (Unix ns) of session time 0, if the recording knows it (``meta["t0_wall_ns"]``)."""
    value = recording.meta.get("t0_wall_ns")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def session_time_s(recording: Recording, wall_ns: int | np.ndarray) -> float | np.ndarray:
    """Session seconds (labels' time axis) of wall-clock time(s) in the recording's clock (Unix ns)."""
    t0 = t0_wall_ns(recording)
    if t0 is None:
        raise RecordingError(f"{recording.path}: meta has no t0_wall_ns (no session-time mapping)")
    if isinstance(wall_ns, np.ndarray):
        return (wall_ns - t0) / 1e9
    return (int(wall_ns) - t0) / 1e9


__all__ = [
    "FLAG_LINK_TIME", "FORMAT_VERSION", "RecordedSensor", "Recording", "RecordingWriter", "read_recording",
    "session_time_s", "t0_wall_ns",
]
