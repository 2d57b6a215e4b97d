"""Publishes frames and status over MQTT (QoS 1), with a retained status and a last will."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter

from jointmon.config import MqttSettings
from jointmon.const import MQTT_QOS
from jointmon.frames import Frame, Gap, encode_frame
from jointmon.messages import Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import DataTopic, gaps_topic, status_topic

log = logging.getLogger("jointmon.gateway.mqtt")


class MqttPublisher:
    """One paho client for a gateway. Thread-safe ``publish_frame``; ``wait_acked`` blocks until
    the broker has acknowledged every QoS 1 message so far (used at the end of a session)."""

    def __init__(self, settings: MqttSettings, gateway_id: str) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.status_topic = status_topic("gateway", gateway_id)
        self.client = make_client(settings, f"jointmon-gw-{gateway_id}", clean_session=False)
        offline = Status("gateway", gateway_id, "offline", 0).to_json()
        self.client.will_set(self.status_topic, offline, qos=MQTT_QOS, retain=True)
        self._waiter = ConnectionWaiter(self.client, f"gateway {gateway_id}")
        self._waiter.on_connected = lambda _c: self.publish_status("online")
        self.client.on_publish = self._on_publish
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._outstanding = 0
        self.extra_counters: Counter[str] = Counter()  # merged into the status (stream counters)

    def start(self) -> None:
        connect(self.client, self.settings, self._waiter)
        log.info("gateway %s connected to %s", self.gateway_id, self.settings.url)

    def publish_frame(self, topic: DataTopic, frame: Frame) -> None:
        payload = encode_frame(frame)
        with self._lock:
            self._outstanding += 1
        self.client.publish(str(topic), payload, qos=MQTT_QOS)
        self.counters["frames_published"] += 1
        self.counters["samples_published"] += frame.count

    def publish_status(self, state: str) -> None:
        status = Status("gateway", self.gateway_id, state, time.time_ns(),
                        counters=dict(self.counters + self.extra_counters))
        self.client.publish(self.status_topic, status.to_json(), qos=MQTT_QOS, retain=True)

    def publish_gap(self, topic: DataTopic, gap: Gap) -> None:
        """A gap record (JSON, QoS 1) on ``jointmon/v1/gaps/...``. Rare and small: sent directly, not
        through the frame queue (paho keeps QoS 1 messages while the broker is away)."""
        self.client.publish(gaps_topic(topic), gap.to_json(), qos=MQTT_QOS)
        self.counters["gaps_published"] += 1

    def _on_publish(self, client: object, userdata: object, mid: int, reason: object, properties: object) -> None:
        with self._acked:
            self._outstanding -= 1
            self._acked.notify_all()

    def wait_acked(self, timeout_s: float = 30.0) -> bool:
        """Wait until every frame published so far has been acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d frames still unacknowledged after %.0f s", self._outstanding, timeout_s)
                    return False
                self._acked.wait(left)
        return True

    def stop(self) -> None:
        """Publish the offline status (retained), then disconnect cleanly (no last will sent)."""
        info = self.client.publish(self.status_topic, Status("gateway", self.gateway_id, "offline", time.time_ns(),
                                   counters=dict(self.counters + self.extra_counters)).to_json(),
                                   qos=MQTT_QOS, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):  # not connected: the last will says offline
            info.wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
