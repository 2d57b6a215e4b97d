"""Gateway configuration file (TOML): which sensors belong to which athlete, joint and segment.

Example (``docs/gateway.example.toml``)::

    [gateway]
    id = "gym-a"
    mqtt_url = "mqtt://127.0.0.1:1883"   # password from JOINTMON_MQTT_PASSWORD

    [[sensors]]
    match = "C4:7C:8D:6A:1E:01"   # BLE address or advertised name
    athlete = "ath-001"            # a pseudonym, never a name
    joint = "knee"                 # with side: the topic's joint is "left_knee"
    side = "left"
    segment = "thigh"

Optional tables: ``[mqtt]`` (:class:`jointmon.config.MqttSettings` fields: TLS files, protocol 4/5,
session expiry, reconnect backoff; never the password), ``[queue]`` (store-and-forward ``path`` and
``max_bytes``), ``[supervisor]`` (:class:`sensor_gateway.supervisor.SupervisorSettings`: backoff,
watchdog) and ``[ble]`` (``adapter_slots``: connections one adapter holds; ``scan_silence_s``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from jointmon.config import ENV_MQTT_PASSWORD, MqttSettings, load_toml, section
from jointmon.errors import ConfigError, TopicError
from jointmon.topics import check_level
from sensor_gateway.disk_queue import DEFAULT_QUEUE_MAX_BYTES
from sensor_gateway.supervisor import SupervisorSettings

SEGMENTS = ("thigh", "shank", "upper_arm", "trunk")
SIDES = ("left", "right")
SENSOR_KEYS = {"match", "athlete", "joint", "segment", "side", "status"}
REQUIRED_SENSOR_KEYS = {"match", "athlete", "joint", "segment"}
MQTT_TOML_KEYS = {"ca_file", "cert_file", "key_file", "protocol", "session_expiry_s", "keepalive_s",
                  "reconnect_min_s", "reconnect_max_s"}  # host, port, user, TLS on/off: the URL; password: env


@dataclass(frozen=True)
class SensorEntry:
    match: str  # BLE address or advertised name (case-insensitive)
    athlete: str
    joint: str  # with the side: "left_knee"
    segment: str
    status: bool = True  # subscribe to the status characteristic (battery)


@dataclass(frozen=True)
class QueueSettings:
    """Store-and-forward queue: SQLite file and bound (payload bytes)."""

    path: str = ""  # "" = default_queue_path(gateway id)
    max_bytes: int = DEFAULT_QUEUE_MAX_BYTES


@dataclass(frozen=True)
class BleSettings:
    """BLE adapter facts: ``adapter_slots`` connections per adapter (most hold 5-7; bleak-retry-connector's
    slot manager refuses a connection beyond it rather than let BlueZ fail obscurely), ``scan_silence_s``:
    a scanner that has seen no advertisement this long is restarted (s)."""

    adapter_slots: int = 5
    scan_silence_s: float = 60.0

    def __post_init__(self) -> None:
        if self.adapter_slots < 1 or self.scan_silence_s <= 0:
            raise ConfigError("adapter_slots must be >= 1 and scan_silence_s > 0")


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    mqtt: MqttSettings
    sensors: tuple[SensorEntry, ...]
    queue: QueueSettings = QueueSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    ble: BleSettings = BleSettings()

    @property
    def queue_path(self) -> Path:
        return Path(self.queue.path) if self.queue.path else default_queue_path(self.gateway_id)

    def find(self, address: str, name: str | None) -> SensorEntry | None:
        """The entry a scanned sensor matches by address or advertised name (case-insensitive), if any."""
        keys = {address.lower(), (name or "").lower()}
        return next((s for s in self.sensors if s.match.lower() in keys), None)


def default_queue_path(gateway_id: str) -> Path:
    """``$XDG_STATE_HOME/jointmon/<id>.queue.sqlite`` (``~/.local/state`` by default): survives reboots."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "jointmon" / f"{gateway_id}.queue.sqlite"


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway config; every error names the file and the key."""
    data = load_toml(path)
    tables = ("gateway", "sensors", "mqtt", "queue", "supervisor", "ble")
    unknown = set(data) - set(tables)
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (known: {', '.join(tables)})")
    gw = data.get("gateway", {})
    if not isinstance(gw, dict):
        raise ConfigError(f"{path}: [gateway] must be a table")
    bad = set(gw) - {"id", "mqtt_url"}
    if bad:
        raise ConfigError(f"{path}: [gateway] unknown key(s) {sorted(bad)} (known: id, mqtt_url)")
    try:
        gateway_id = check_level("gateway.id", str(gw.get("id", "gateway")))
    except TopicError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        mqtt = MqttSettings.from_url(str(gw.get("mqtt_url", "mqtt://127.0.0.1:1883")))
    except ConfigError as exc:
        raise ConfigError(f"{path}: [gateway] mqtt_url: {exc}") from None
    mqtt_table = data.get("mqtt", {})
    if isinstance(mqtt_table, dict):
        extra = set(mqtt_table) - MQTT_TOML_KEYS
        if extra:
            raise ConfigError(f"{path}: [mqtt] unknown key(s) {sorted(extra)} (known: "
                              f"{', '.join(sorted(MQTT_TOML_KEYS))}; the password comes from ${ENV_MQTT_PASSWORD})")
        base = {f.name: getattr(mqtt, f.name) for f in fields(MqttSettings)}
        mqtt = section({"mqtt": {**base, **mqtt_table}}, MqttSettings, "mqtt", path)
    else:
        raise ConfigError(f"{path}: [mqtt] must be a table")
    queue = section(data, QueueSettings, "queue", path)
    supervisor = section(data, SupervisorSettings, "supervisor", path)
    ble = section(data, BleSettings, "ble", path)
    raw_sensors = data.get("sensors", [])
    if not isinstance(raw_sensors, list) or not raw_sensors:
        raise ConfigError(f"{path}: no [[sensors]] entries")
    sensors: list[SensorEntry] = []
    for i, s in enumerate(raw_sensors):
        sensors.append(_sensor(f"{path}: sensors[{i}]", s))
    seen: dict[str, int] = {}
    for i, e in enumerate(sensors):
        key = e.match.lower()
        if key in seen:
            raise ConfigError(f"{path}: sensors[{i}].match = {e.match!r}: already used by sensors[{seen[key]}]")
        seen[key] = i
    return GatewayConfig(gateway_id, mqtt, tuple(sensors), queue, supervisor, ble)


def _sensor(where: str, s: object) -> SensorEntry:
    if not isinstance(s, dict):
        raise ConfigError(f"{where} must be a table")
    missing = REQUIRED_SENSOR_KEYS - set(s)
    extra = set(s) - SENSOR_KEYS
    if missing or extra:
        raise ConfigError(f"{where}: missing key(s) {sorted(missing)}" if missing
                          else f"{where}: unknown key(s) {sorted(extra)} (known: {', '.join(sorted(SENSOR_KEYS))})")
    for key in ("match", "athlete", "joint", "segment", "side"):
        if key in s and not isinstance(s[key], str):
            raise ConfigError(f"{where}.{key} = {s[key]!r}: must be a string")
    if not s["match"].strip():
        raise ConfigError(f"{where}.match is empty: give the BLE address or the advertised name")
    if s["segment"] not in SEGMENTS:
        raise ConfigError(f"{where}.segment = {s['segment']!r}: must be one of {SEGMENTS}")
    joint = s["joint"]
    if "side" in s:
        if s["side"] not in SIDES:
            raise ConfigError(f"{where}.side = {s['side']!r}: must be one of {SIDES}")
        if joint.startswith(SIDES):
            raise ConfigError(f"{where}.joint = {joint!r}: the side is in side = {s['side']!r}; write joint = "
                              f"{joint.split('_', 1)[-1]!r}")
        joint = f"{s['side']}_{joint}"
    status = s.get("status", True)
    if not isinstance(status, bool):
        raise ConfigError(f"{where}.status = {status!r}: must be true or false")
    try:
        check_level("athlete", s["athlete"])
        check_level("joint", joint)
    except TopicError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return SensorEntry(s["match"], s["athlete"], joint, s["segment"], status)
