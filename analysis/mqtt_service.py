"""The analysis service: subscribes to every data topic, runs one pipeline per joint, publishes events.

It also takes self-reports (pain, swelling) on the reports topic and publishes each joint's red-flag
grade (:mod:`analysis.red_flags`) on the grades topic at the end of the session (and, with
``grade_interval_s``, an interim grade periodically while it runs).

Besides angles and events, a sink that has the :class:`~analysis.result_sink.RecordSink` methods
(the InfluxDB sink) also gets the grades, the accepted self-reports, the gateways' sensor statuses
and gap records (subscribed for that), and the service's own counters every ``health_interval_s``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import paho.mqtt.client as mqtt

from analysis.athlete_history import AthleteHistory, grade_with_history
from analysis.joint_router import JointRouter
from analysis.knee_pipeline import KneePipeline, KneeSettings
from analysis.red_flags import RedFlagSettings, summarize
from analysis.result_sink import JointKey, ResultSink, forward
from jointmon.config import MqttSettings
from jointmon.const import MQTT_QOS
from jointmon.errors import FrameError, MessageError, TopicError
from jointmon.frames import Gap
from jointmon.messages import JointEvent, JointGrade, SelfReport, Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import (
    DATA_SUBSCRIPTION,
    GAPS_SUBSCRIPTION,
    REPORTS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    events_topic,
    grades_topic,
    parse_gaps_topic,
    parse_reports_topic,
    status_topic,
)

log = logging.getLogger("jointmon.analysis")


class MqttEventSink:
    """Publishes each event (JSON, QoS 1) on its joint's events topic; angles stay out of MQTT."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client

    def angles(self, key: JointKey, t_ns: object, flexion_deg: object) -> None:
        pass

    def event(self, event: JointEvent) -> None:
        self.client.publish(events_topic(event.athlete, event.joint), event.to_json(), qos=MQTT_QOS)

    def close(self) -> None:
        pass


class AnalysisService:
    """Frames from MQTT are queued by paho's network thread and processed by one worker thread,
    so slow processing never stalls acknowledgements. Malformed topics or payloads are counted
    per reason (``dropped_<reason>``) and logged, never raised (see :class:`JointRouter`).

    Self-reports arrive on the same queue (so one thread owns all state): accepted ones count as
    ``reports``, bad ones as ``dropped_report_bad_topic`` / ``dropped_report_malformed`` /
    ``dropped_report_mismatch`` (topic and payload name different joints). ``history`` (optional)
    gives the red-flag grades their cross-session trend and records each final grade;
    ``grade_interval_s`` (s, optional) publishes interim grades while the session runs.

    Gap records and sensor statuses go to the sink only (bad ones count as ``dropped_gap_bad_topic``,
    ``dropped_gap_malformed``, ``dropped_status_malformed``); ``health_interval_s`` (s): how often the
    counters go to the sink (``pipeline_health``), also once at stop.

    ``subscribe_streams=False``: the service does not subscribe to the data and gaps topics itself; another
    receiver hands it their messages with :meth:`submit` (the partition sessions of
    :class:`analysis.partitions.PartitionedWorker`, several workers sharing the streams).
    """

    def __init__(self, mqtt_settings: MqttSettings, sink: ResultSink, session: str, worker_id: str = "analysis-1",
                 knee_settings: KneeSettings | None = None,
                 on_event: Callable[[JointEvent], None] | None = None, *,
                 history: AthleteHistory | None = None, red_flags: RedFlagSettings | None = None,
                 grade_interval_s: float | None = None, health_interval_s: float = 10.0,
                 subscribe_streams: bool = True) -> None:
        self.settings = mqtt_settings
        self.subscribe_streams = subscribe_streams
        self.session = session
        self.worker_id = worker_id
        self.client = make_client(mqtt_settings, f"jointmon-{worker_id}", clean_session=False)
        self.client.on_socket_open = _tcp_nodelay
        self.status_topic = status_topic("analysis", worker_id)
        self.client.will_set(self.status_topic, Status("analysis", worker_id, "offline", 0).to_json(),
                             qos=MQTT_QOS, retain=True)
        self._waiter = ConnectionWaiter(self.client, f"analysis {worker_id}")
        self._waiter.on_connected = self._on_connected
        self.client.on_message = self._on_message
        self.sink = sink
        self.event_sink = MqttEventSink(self.client)
        self._on_event = on_event
        self.history = history
        self.red_flags = red_flags or RedFlagSettings()
        self.grade_interval_s = grade_interval_s
        self._next_grade = time.monotonic() + (grade_interval_s or 0.0)
        self.reports: dict[tuple[str, str], SelfReport] = {}  # (athlete, joint) -> latest report of this session
        self.joint_events: defaultdict[tuple[str, str], list[JointEvent]] = defaultdict(list)
        self.grades: list[JointGrade] = []  # every grade published, interim and final
        # Stream checks, counters and per-joint pipelines are shared with the offline runner.
        self.router = JointRouter(session, _EventTap(sink, self.event_sink, self._tap_event), knee_settings)
        self.knee_settings = self.router.knee_settings
        self.pipelines: dict[tuple[str, str], KneePipeline] = self.router.pipelines
        self.counters = self.router.counters
        self.samples = self.router.samples  # per "athlete/joint/sensor/stream"
        self._queue: queue.Queue[tuple[str, bytes, Callable[[], None] | None] | None] = queue.Queue()
        self._last_message = time.monotonic()
        self._busy = False
        self._worker = threading.Thread(target=self._work, name=f"{worker_id}-worker", daemon=True)
        self.health_interval_s = health_interval_s
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"{worker_id}-health", daemon=True)

    # --- MQTT side (paho's network thread) ---
    def _on_connected(self, client: mqtt.Client) -> None:
        streams = [(DATA_SUBSCRIPTION, MQTT_QOS), (GAPS_SUBSCRIPTION, MQTT_QOS)] if self.subscribe_streams else []
        client.subscribe([*streams, (REPORTS_SUBSCRIPTION, MQTT_QOS), (_SENSOR_STATUS_SUBSCRIPTION, MQTT_QOS)])
        self._publish_status("online")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.submit(msg.topic, msg.payload)

    def submit(self, topic: str, payload: bytes, on_done: Callable[[], None] | None = None) -> None:
        """Queue one message for the worker thread, as if it came from the service's subscriptions (any thread);
        ``on_done()`` runs on the worker thread once it is processed (e.g. a manual MQTT acknowledgement)."""
        self._last_message = time.monotonic()
        self._queue.put((topic, payload, on_done))

    def _publish_status(self, state: str) -> None:
        status = Status("analysis", self.worker_id, state, time.time_ns(), counters=dict(self.counters))
        self.client.publish(self.status_topic, status.to_json(), qos=MQTT_QOS, retain=True)

    # --- processing side (worker thread) ---
    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._busy = True
            topic, payload, on_done = item
            try:
                self._handle(topic, payload)
            except Exception:  # a bug in one frame's processing must not stop the whole service
                self.counters["dropped_internal_error"] += 1
                log.exception("frame on %s failed", topic)
            finally:
                if on_done is not None:
                    on_done()
                self._busy = False
                self._queue.task_done()
        self._queue.task_done()

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic.startswith(_REPORTS_PREFIX):
            self._on_report(topic, payload)
        elif topic.startswith(_GAPS_PREFIX):
            self._on_gap(topic, payload)
        elif topic.startswith(_STATUS_PREFIX):
            self._on_status(topic, payload)
        elif topic == _HEALTH_TICK:
            self.write_health()
        else:
            self.router.handle_message(topic, payload)
        if self.grade_interval_s and time.monotonic() >= self._next_grade:
            self._next_grade = time.monotonic() + self.grade_interval_s
            self.publish_grades(final=False)

    def _tap_event(self, event: JointEvent) -> None:
        self.joint_events[(event.athlete, event.joint)].append(event)
        if self._on_event:
            self._on_event(event)

    def _on_gap(self, topic: str, payload: bytes) -> None:
        """A gateway gap record: to the sink (the router learns gaps from the frames themselves)."""
        try:
            stream = parse_gaps_topic(topic)
        except TopicError as exc:
            self.router.drop("gap_bad_topic", topic, exc)
            return
        try:
            gap = Gap.from_json(payload)
        except FrameError as exc:
            self.router.drop("gap_malformed", topic, exc)
            return
        self.counters["gaps"] += 1
        forward(self.sink, "gap", stream, gap, self.session)

    def _on_status(self, topic: str, payload: bytes) -> None:
        """A sensor's status from a gateway (retained: also earlier ones, at their own time): to the sink."""
        try:
            status = Status.from_json(payload)
        except MessageError as exc:
            self.router.drop("status_malformed", topic, exc)
            return
        self.counters["sensor_statuses"] += 1
        forward(self.sink, "sensor_status", status, self.session)

    def write_health(self) -> None:
        """The service's counters to the sink (``pipeline_health``, component ``analysis``)."""
        forward(self.sink, "pipeline_health", "analysis", dict(self.counters), time.time_ns())

    def _tick(self) -> None:
        while not self._stopping.wait(self.health_interval_s):
            self._queue.put((_HEALTH_TICK, b"", None))  # the worker thread writes it: one thread owns the state

    def _on_report(self, topic: str, payload: bytes) -> None:
        """A self-report: validated, kept for this session's grade (and in the history); never raises."""
        try:
            athlete, joint = parse_reports_topic(topic)
        except TopicError as exc:
            self.router.drop("report_bad_topic", topic, exc)
            return
        try:
            report = SelfReport.from_json(payload)
        except MessageError as exc:
            self.router.drop("report_malformed", topic, exc)
            return
        if (report.athlete, report.joint) != (athlete, joint):
            self.router.drop("report_mismatch", topic, f"payload is for {report.athlete}/{report.joint}")
            return
        self.counters["reports"] += 1
        if report.session == self.session:
            self.reports[(athlete, joint)] = report
        else:
            self.counters["reports_other_session"] += 1
        if self.history is not None:
            self.history.save_report(report)
        forward(self.sink, "self_report", report)

    def publish_grades(self, final: bool = True) -> list[JointGrade]:
        """Grade every joint seen so far (or reported on) and publish each grade, retained, on its
        grades topic. Final grades are recorded in the history."""
        start = self.router.first_ns or 0
        duration_s = (self.router.end_ns - start) / 1e9 if self.router.end_ns is not None else 0.0
        out = []
        for athlete, joint in sorted(j for j in set(self.pipelines) | set(self.reports) if self.router.owns(*j)):
            summary = summarize(self.joint_events.get((athlete, joint), ()), athlete, joint, self.session,
                                duration_s, t_ns=start, settings=self.red_flags)
            grade = grade_with_history(summary, self.reports.get((athlete, joint)), self.history, self.red_flags,
                                       t_ns=time.time_ns(), final=final)
            self.client.publish(grades_topic(athlete, joint), grade.to_json(), qos=MQTT_QOS, retain=True)
            forward(self.sink, "grade", grade)
            out.append(grade)
        self.grades.extend(out)
        return out

    # --- lifecycle ---
    def start(self) -> None:
        self._worker.start()
        self._ticker.start()
        connect(self.client, self.settings, self._waiter)
        log.info("analysis %s subscribed to %s on %s", self.worker_id, DATA_SUBSCRIPTION, self.settings.url)

    def wait_quiet(self, quiet_s: float = 0.5, timeout_s: float = 60.0) -> bool:
        """Wait until no message arrived for ``quiet_s`` and every queued frame is processed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and not self._busy and time.monotonic() - self._last_message > quiet_s:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Finish every pipeline (pending detections), publish offline status, disconnect, close sinks."""
        self._stopping.set()
        self._queue.put(None)
        self._worker.join(timeout=30)
        self.router.finish()
        try:
            self.publish_grades(final=True)
        except Exception:  # grading must never keep the service from shutting down cleanly
            self.counters["grade_errors"] += 1
            log.exception("red-flag grading failed")
        try:
            self.write_health()
        except Exception:  # noqa: BLE001 - a sink error must not keep the service from stopping
            log.exception("writing the pipeline health failed")
        self._publish_status("offline")
        self.client.disconnect()
        self.client.loop_stop()
        self.sink.close()


_REPORTS_PREFIX = REPORTS_SUBSCRIPTION.removesuffix("#")
_GAPS_PREFIX = GAPS_SUBSCRIPTION.removesuffix("#")
_STATUS_PREFIX = STATUS_SUBSCRIPTION.removesuffix("#") + "sensor/"
_SENSOR_STATUS_SUBSCRIPTION = _STATUS_PREFIX + "+"
_HEALTH_TICK = ""  # queue item of the health ticker (no MQTT topic is empty)


def _tcp_nodelay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Send each event as soon as it is published. paho leaves Nagle's algorithm on, and this client
    also sends a stream of small PUBACKs for the data frames: a small event PUBLISH then waited for
    the broker's delayed ACK, measured at +40 ms on every event (bench/latency.py --in-process)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _EventTap:
    """Sink wrapper: results go to the main sink, events also to MQTT and an optional callback."""

    def __init__(self, sink: ResultSink, mqtt_sink: MqttEventSink, on_event: Callable[[JointEvent], None] | None):
        self.sink, self.mqtt_sink, self.on_event = sink, mqtt_sink, on_event

    def angles(self, key: JointKey, t_ns: object, flexion_deg: object) -> None:
        self.sink.angles(key, t_ns, flexion_deg)

    def event(self, event: JointEvent) -> None:
        self.sink.event(event)
        self.mqtt_sink.event(event)
        if self.on_event:
            self.on_event(event)

    def close(self) -> None:
        pass
