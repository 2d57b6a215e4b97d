"""paho-mqtt 2.x client set-up shared by the gateway and the analysis (one place for options)."""

from __future__ import annotations

import logging
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jointmon.config import MqttSettings
from jointmon.const import MQTT_CONNECT_TIMEOUT_S, MQTT_MAX_INFLIGHT
from jointmon.errors import ConfigError, LinkError

log = logging.getLogger("jointmon.mqtt")


def make_client(settings: MqttSettings, client_id: str, *, clean_session: bool = True) -> mqtt.Client:
    """A paho 2.x client (VERSION2 callbacks) with jointmon's options applied.

    MQTT 3.1.1 unless ``settings.protocol`` is 5 (the demo's fallback broker, amqtt, speaks nothing
    newer). ``clean_session=False`` asks for a persistent session: with MQTT 5 that is sent as
    ``clean_start = false`` with a session expiry (see :func:`connect`).
    """
    if settings.protocol == 5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                             protocol=mqtt.MQTTv311)
    client._jointmon_clean = clean_session  # type: ignore[attr-defined]  # read by connect() for MQTT 5
    client.max_inflight_messages_set(MQTT_MAX_INFLIGHT)
    client.max_queued_messages_set(0)  # 0 = unbounded: while the broker is away nothing is dropped here
    client.reconnect_delay_set(min_delay=settings.reconnect_min_s, max_delay=settings.reconnect_max_s)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:  # a missing or unreadable CA / certificate / key file
            raise ConfigError(f"MQTT TLS files (ca_file={settings.ca_file}, cert_file={settings.cert_file}, "
                              f"key_file={settings.key_file}): {exc}") from None
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
    if settings.protocol == 5:
        props = Properties(PacketTypes.CONNECT)
        clean = bool(getattr(client, "_jointmon_clean", True))
        props.SessionExpiryInterval = 0 if clean else settings.session_expiry_s
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s, clean_start=clean,
                             properties=props)
    else:
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
    client.loop_start()
    deadline = time.monotonic() + timeout_s
    while not waiter.connected.wait(0.05):
        if time.monotonic() > deadline:
            client.loop_stop()
            detail = f": {waiter.last_error}" if waiter.last_error else ""
            raise LinkError(f"{waiter.name}: no MQTT connection to {settings.url} within {timeout_s:.0f} s{detail}")
