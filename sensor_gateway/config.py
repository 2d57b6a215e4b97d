"""Gateway configuration file (TOML): which sensors belong to which athlete, joint and segment.

Example (``docs/gateway.example.toml``)::

    [gateway]
    id = "gym-a"
    mqtt_url = "mqtt://127.0.0.1:1883"   # password from JOINTMON_MQTT_PASSWORD

    [[sensors]]
    match = "C4:7C:8D:6A:1E:01"   # BLE address or advertised name
    athlete = "ath-001"            # a pseudonym, never a name
    joint = "left_knee"
    segment = "thigh"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jointmon.config import MqttSettings, load_toml
from jointmon.errors import ConfigError, TopicError
from jointmon.topics import check_level

SEGMENTS = ("thigh", "shank", "upper_arm", "trunk")


@dataclass(frozen=True)
class SensorEntry:
    match: str
    athlete: str
    joint: str
    segment: str


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    mqtt: MqttSettings
    sensors: tuple[SensorEntry, ...]


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway config; every error names the file and the key."""
    data = load_toml(path)
    unknown = set(data) - {"gateway", "sensors"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (known: gateway, sensors)")
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
    raw_sensors = data.get("sensors", [])
    if not isinstance(raw_sensors, list) or not raw_sensors:
        raise ConfigError(f"{path}: no [[sensors]] entries")
    sensors = []
    for i, s in enumerate(raw_sensors):
        where = f"{path}: sensors[{i}]"
        if not isinstance(s, dict):
            raise ConfigError(f"{where} must be a table")
        missing = {"match", "athlete", "joint", "segment"} - set(s)
        extra = set(s) - {"match", "athlete", "joint", "segment"}
        if missing or extra:
            raise ConfigError(f"{where}: missing key(s) {sorted(missing)}" if missing
                              else f"{where}: unknown key(s) {sorted(extra)}")
        if s["segment"] not in SEGMENTS:
            raise ConfigError(f"{where}.segment = {s['segment']!r}: must be one of {SEGMENTS}")
        try:
            for key in ("athlete", "joint"):
                check_level(key, s[key])
        except TopicError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        sensors.append(SensorEntry(str(s["match"]), s["athlete"], s["joint"], s["segment"]))
    return GatewayConfig(gateway_id, mqtt, tuple(sensors))
