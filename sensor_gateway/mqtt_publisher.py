"""Publishes frames and status over MQTT: QoS 1, persistent session, store-and-forward on disk.

Path of a frame: ``publish_frame`` writes it to the :class:`~sensor_gateway.disk_queue.DiskQueue`
(write-ahead, whether the broker is there or not), a sender thread hands queued frames to paho in
order while connected, at most ``MQTT_MAX_INFLIGHT`` at a time, and a frame leaves the disk only
when the broker has acknowledged it (PUBACK). So:

* broker down: frames pile up on disk (bounded; the oldest are dropped and counted when full);
  the frames paho already held are resent by paho itself when it reconnects (persistent session),
  then the queue drains in order;
* gateway killed: the next start with the same queue file sends what was not acknowledged
  (at-least-once: a frame may arrive twice; subscribers drop duplicates by frame sequence).

Status: the gateway's status (retained, with a last will "offline") and one retained status per
sensor. MQTT has one will per connection, so the per-sensor statuses are only valid while the
gateway status is ``online``; a clean stop marks every sensor ``offline`` too.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from jointmon.config import MqttSettings
from jointmon.const import MQTT_MAX_INFLIGHT, MQTT_QOS
from jointmon.frames import Frame, Gap, encode_frame
from jointmon.messages import Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import DataTopic, gaps_topic, status_topic
from sensor_gateway.disk_queue import DEFAULT_QUEUE_MAX_BYTES, MEMORY, DiskQueue, QueuedMessage

log = logging.getLogger("jointmon.gateway.mqtt")

# The sender thread polls at least this often (s), so a lost wake-up costs at most this much latency.
SENDER_POLL_S = 0.1


class MqttPublisher:
    """One paho client for a gateway, with a disk queue in front of it.

    ``queue_path``: the store-and-forward SQLite file (``":memory:"``: bounded and counted, but not
    kept across restarts); ``queue_max_bytes``: its bound, payload bytes. ``publish_frame`` is
    thread-safe. ``counters``: frames/samples_published (acknowledged by the broker),
    frames_queued_offline (written while the broker was unreachable), queue_dropped_frames/_samples
    (queue full), queue_resumed_frames (found on disk at start).
    """

    def __init__(self, settings: MqttSettings, gateway_id: str, *, queue_path: str | Path = MEMORY,
                 queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES, partitions: int = 0) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        # > 0: frames and gaps go to partitioned topics (jointmon/v1/data/p{n}/...), one partition per joint, for
        # analysis workers that share the partitions (analysis/partitions.py); every gateway must use the same N.
        self.partitions = partitions
        self._topic_names: dict[DataTopic, tuple[str, str]] = {}  # stream -> (data topic, gaps topic) as published
        self.status_topic = status_topic("gateway", gateway_id)
        self.queue = DiskQueue(queue_path, queue_max_bytes)
        self.client = make_client(settings, f"jointmon-gw-{gateway_id}", clean_session=False)
        offline = Status("gateway", gateway_id, "offline", 0).to_json()
        self.client.will_set(self.status_topic, offline, qos=MQTT_QOS, retain=True)
        self._waiter = ConnectionWaiter(self.client, f"gateway {gateway_id}")
        self._waiter.on_connected = self._on_connected
        self.client.on_publish = self._on_publish
        self.counters: Counter[str] = Counter()
        self.extra_counters: Counter[str] = Counter()  # merged into the status (gateway and stream counters)
        self.info: dict[str, Any] = {}  # merged into the gateway status' info
        self._sensor_status: dict[str, Status] = {}  # last status per sensor id, re-published on reconnect
        self._in_flight: dict[int, QueuedMessage] = {}  # paho mid -> queued row (sender thread only)
        self._acks: collections.deque[int] = collections.deque()  # mids acknowledged (paho thread appends)
        self._wake = threading.Event()
        self._drained = threading.Condition()
        self._stopping = threading.Event()
        self._sender: threading.Thread | None = None
        self._was_connected = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, require_broker: bool = True) -> None:
        """Start the network and sender threads. ``require_broker``: wait for the first CONNACK and raise
        :class:`jointmon.errors.LinkError` if none comes; False: go on with frames queued on disk."""
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.gateway_id}", daemon=True)
        self._sender.start()
        if require_broker:
            connect(self.client, self.settings, self._waiter)
            log.info("gateway %s connected to %s", self.gateway_id, self.settings.url)
        else:
            try:
                connect(self.client, self.settings, self._waiter, timeout_s=0.5)
            except Exception as exc:  # noqa: BLE001 - a broker away at start is what the queue is for
                log.warning("gateway %s: %s; frames go to the disk queue until it answers", self.gateway_id, exc)
                self.client.loop_start()  # connect() stopped it; paho keeps retrying in the background

    def stop(self, flush_timeout_s: float = 10.0) -> None:
        """Wait up to ``flush_timeout_s`` for the queue to drain, mark every sensor and the gateway
        offline (retained), then disconnect cleanly (no last will). Frames still queued stay on disk."""
        self.wait_acked(flush_timeout_s)
        for sensor_id, last in list(self._sensor_status.items()):
            self.publish_sensor_status(sensor_id, "offline", last.counters, last.info)
        info = self.client.publish(self.status_topic, self._gateway_status("offline").to_json(),
                                   qos=MQTT_QOS, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):  # not connected: the last will says offline
            info.wait_for_publish(timeout=5)
        self._stopping.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        self.queue.close()
        if len(self.queue):
            log.warning("gateway %s: %d frames not acknowledged stay in %s for the next start",
                        self.gateway_id, len(self.queue), self.queue.path)

    def abandon(self) -> None:
        """Stop without a word to the broker, as if the process died (tests: last will, restart resume)."""
        self._stopping.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(5)
        with contextlib.suppress(OSError, AttributeError):
            sock = self.client.socket()
            if sock is not None:
                sock.close()
        self.client.loop_stop()
        self.queue.close()

    @property
    def connected(self) -> bool:
        return self._waiter.connected.is_set()

    # ------------------------------------------------------------------ frames

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        """Queue one frame (on disk first); it is sent in order as soon as the broker takes it."""
        if not self.connected:
            self.counters["frames_queued_offline"] += 1
        self.queue.put(self._names(topic)[0], encode_frame(frame), frame.count)
        self._wake.set()

    def _names(self, topic: DataTopic) -> tuple[str, str]:
        """The data and gaps topic names a stream is published on (partitioned if configured)."""
        names = self._topic_names.get(topic)
        if names is None:
            t = topic.partitioned(self.partitions) if self.partitions else topic
            names = self._topic_names[topic] = (str(t), gaps_topic(t))
        return names

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        """A gap record (JSON, QoS 1) on ``jointmon/v1/gaps/...``, through the same disk queue as the
        frames: it stays in order before its stream's next frame and survives an outage or a restart."""
        self.queue.put(self._names(topic)[1], gap.to_json(), 0)
        self.counters["gaps_published"] += 1
        self._wake.set()

    def _on_publish(self, client: object, userdata: object, mid: int, reason: object, properties: object) -> None:
        # paho's network thread, inside paho's message lock: only record the ack, the sender settles it.
        self._acks.append(mid)
        self._wake.set()

    def _on_connected(self, client: mqtt.Client) -> None:
        if self._was_connected:
            self.counters["mqtt_reconnects"] += 1
            log.info("gateway %s: reconnected to %s; %d frames queued on disk", self.gateway_id,
                     self.settings.url, len(self.queue))
        self._was_connected = True
        self.publish_status("online")
        for last in list(self._sensor_status.values()):  # a broker that lost its retained messages gets them back
            client.publish(status_topic("sensor", last.component_id), last.to_json(), qos=MQTT_QOS, retain=True)
        self._wake.set()

    def _settle_acks(self) -> None:
        done: list[int] = []
        while self._acks:
            msg = self._in_flight.pop(self._acks.popleft(), None)
            if msg is None:  # a status message, not a queued frame
                continue
            done.append(msg.row_id)
            self.counters["frames_published"] += 1
            self.counters["samples_published"] += msg.samples
        if done:
            self.queue.remove(done)
            with self._drained:
                self._drained.notify_all()

    def _send_loop(self) -> None:
        """Hand queued frames to paho in row order while connected, keeping at most MQTT_MAX_INFLIGHT out."""
        while not self._stopping.is_set():
            self._wake.wait(SENDER_POLL_S)
            self._wake.clear()
            try:
                self._settle_acks()
                room = MQTT_MAX_INFLIGHT - len(self._in_flight)
                if not self.connected or room <= 0:
                    continue
                batch = self.queue.peek(self.queue.handed_upto, room)
                for msg in batch:
                    info = self.client.publish(msg.topic, msg.payload, qos=MQTT_QOS)
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho keeps it
                        log.warning("paho refused a frame (%s); retrying", mqtt.error_string(info.rc))
                        break
                    self._in_flight[info.mid] = msg
                    self.queue.handed_upto = msg.row_id
                if batch:
                    self._wake.set()  # there may be more: go round again at once
            except Exception:  # noqa: BLE001 - the sender must outlive any one bad row; logged loudly
                self.counters["sender_errors"] += 1
                log.exception("gateway %s: store-and-forward sender error", self.gateway_id)
                time.sleep(SENDER_POLL_S)

    def wait_acked(self, timeout_s: float = 30.0) -> bool:
        """Wait until the broker has acknowledged every frame queued so far (the disk queue is empty)."""
        deadline = time.monotonic() + timeout_s
        with self._drained:
            while len(self.queue) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d frames still unacknowledged after %.0f s", len(self.queue), timeout_s)
                    return False
                self._drained.wait(min(left, SENDER_POLL_S))
        return True

    # ------------------------------------------------------------------ status

    def health(self) -> Counter[str]:
        """Publisher counters plus the queue's (drops, resumed) and its current depth (gauges)."""
        out = self.counters + self.queue.counters
        out["queue_frames"] = len(self.queue)
        out["queue_bytes"] = self.queue.size_bytes
        return out

    def _gateway_status(self, state: str) -> Status:
        counters = self.health()
        counters.update(self.extra_counters)  # update, not +: a zero (scanner_restarts = 0) is a reading too
        counters = dict(counters)
        return Status("gateway", self.gateway_id, state, time.time_ns(), counters=counters, info=dict(self.info))

    def publish_status(self, state: str) -> None:
        """The gateway's retained status with every counter (sent directly, not through the queue)."""
        self.client.publish(self.status_topic, self._gateway_status(state).to_json(), qos=MQTT_QOS, retain=True)

    def publish_sensor_status(self, sensor_id: str, state: str, counters: dict[str, int],
                              info: dict[str, Any]) -> None:
        """One sensor's retained status at ``jointmon/v1/status/sensor/{sensor_id}``; ``info`` holds the
        gauges (packets_per_s, loss_pct, rssi_dbm, battery_pct, clock_drift_ppm, gateway)."""
        status = Status("sensor", sensor_id, state, time.time_ns(), counters=dict(counters),
                        info={"gateway": self.gateway_id, **info})
        self._sensor_status[sensor_id] = status
        self.client.publish(status_topic("sensor", sensor_id), status.to_json(), qos=MQTT_QOS, retain=True)
