"""paho-mqtt 2.x client set-up shared by the gateway and the analysis (one place for options)."""

from __future__ import annotations

import logging
import ssl
import threading
import time

import paho.mqtt.client as mqtt

from jointmon.config import MqttSettings
from jointmon.const import MQTT_CONNECT_TIMEOUT_S, MQTT_MAX_INFLIGHT
from jointmon.errors import LinkError

log = logging.getLogger("jointmon.mqtt")


def make_client(settings: MqttSettings, client_id: str, *, clean_session: bool = True) -> mqtt.Client:
    """A paho 2.x client (VERSION2 callbacks, MQTT 3.1.1) with jointmon's options applied.

    MQTT 3.1.1 because the demo's fallback broker (amqtt) speaks nothing newer.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(MQTT_MAX_INFLIGHT)
    client.max_queued_messages_set(0)  # 0 = unbounded: while the broker is away nothing is dropped here
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return client


class ConnectionWaiter:
    """Tracks the CONNACK so callers can wait for the first connection with a timeout."""

    def __init__(self, client: mqtt.Client, name: str) -> None:
        self.connected = threading.Event()
        self.name = name
        self.last_error = ""
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = str(reason)
            log.warning("%s: broker refused connection: %s", self.name, reason)
            return
        self.connected.set()
        self.on_connected(client)

    def on_connected(self, client: mqtt.Client) -> None:
        """Hook for subclasses / owners: (re)subscribe, publish status."""

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        self.connected.clear()
        if getattr(reason, "value", 0) != 0:
            log.warning("%s: disconnected from broker (%s); paho reconnects", self.name, reason)


def connect(client: mqtt.Client, settings: MqttSettings, waiter: ConnectionWaiter,
            timeout_s: float = MQTT_CONNECT_TIMEOUT_S) -> None:
    """Start the network thread and wait for the first CONNACK; :class:`LinkError` if none comes."""
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
    client.loop_start()
    deadline = time.monotonic() + timeout_s
    while not waiter.connected.wait(0.05):
        if time.monotonic() > deadline:
            client.loop_stop()
            detail = f": {waiter.last_error}" if waiter.last_error else ""
            raise LinkError(f"{waiter.name}: no MQTT connection to {settings.url} within {timeout_s:.0f} s{detail}")
