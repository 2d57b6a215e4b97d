"""Connection settings (jointmon.config): URLs, environment secrets, TOML files and table checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from jointmon.config import (
    ENV_INFLUX_PASSWORD,
    ENV_INFLUX_TOKEN,
    ENV_MQTT_PASSWORD,
    InfluxSettings,
    MqttSettings,
    load_toml,
    section,
)
from jointmon.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_MQTT_PASSWORD, ENV_INFLUX_TOKEN, ENV_INFLUX_PASSWORD):
        monkeypatch.delenv(name, raising=False)


# --- MQTT URL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user"),
    [
        ("mqtt://broker", "broker", 1883, False, None),
        ("mqtt://broker:1884", "broker", 1884, False, None),
        ("mqtts://broker", "broker", 8883, True, None),
        ("mqtts://broker:443", "broker", 443, True, None),
        ("tcp://10.0.0.5", "10.0.0.5", 1883, False, None),
        ("mqtt://alice@broker.example.org:1885", "broker.example.org", 1885, False, "alice"),
        ("mqtts://gw_1@broker", "broker", 8883, True, "gw_1"),
        ("mqtt://127.0.0.1:65535", "127.0.0.1", 65535, False, None),
        ("mqtt://[::1]:1884", "::1", 1884, False, None),
    ],
)
def test_mqtt_from_url(url: str, host: str, port: int, tls: bool, user: str | None) -> None:
    s = MqttSettings.from_url(url)
    assert (s.host, s.port, s.tls, s.username) == (host, port, tls, user)
    assert s.password is None
    assert s.keepalive_s == 30


def test_mqtt_url_property() -> None:
    assert MqttSettings.from_url("mqtts://alice@broker").url == "mqtts://broker:8883"
    assert MqttSettings.from_url("tcp://broker:1999").url == "mqtt://broker:1999"
    assert MqttSettings().url == "mqtt://127.0.0.1:1883"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://broker", "scheme"),
        ("ws://broker:9001", "scheme"),
        ("broker:1883", "scheme"),
        ("broker", "scheme"),
        ("", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtts:///path", "no host"),
        ("mqtt://broker:abc", "Port"),
        ("mqtt://broker:99999", "Port"),
        ("mqtt://broker:-1", "Port"),
    ],
)
def test_mqtt_from_url_rejects(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        MqttSettings.from_url(url)
    assert repr(url) in str(info.value)  # the message names the offending URL


def test_mqtt_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MqttSettings.from_url("mqtt://alice@broker").password is None
    monkeypatch.setenv(ENV_MQTT_PASSWORD, "s3cret")
    s = MqttSettings.from_url("mqtt://alice@broker")
    assert (s.username, s.password) == ("alice", "s3cret")
    assert "s3cret" not in s.url


# --- InfluxDB --------------------------------------------------------------------------------------


def test_influx_defaults_and_v1() -> None:
    s = InfluxSettings()
    assert (s.url, s.api, s.database, s.org, s.batch_size, s.flush_interval_s) == (
        "http://127.0.0.1:8086", "v2", "jointmon", "jointmon", 5000, 0.1)
    v1 = InfluxSettings(url="https://influx.example.org:8086", api="v1", database="lab", username="u")
    assert (v1.api, v1.database, v1.username) == ("v1", "lab", "u")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"api": "v3"}, "api"),
        ({"api": "V2"}, "api"),
        ({"api": ""}, "api"),
        ({"url": "ftp://influx:8086"}, "url"),
        ({"url": "localhost:8086"}, "url"),
        ({"url": "influx"}, "url"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -5}, "batch_size"),
        ({"flush_interval_s": 0.0}, "flush_interval_s"),
        ({"flush_interval_s": -1.0}, "flush_interval_s"),
    ],
)
def test_influx_validation(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InfluxSettings(**kw)


def test_influx_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = InfluxSettings.from_env()
    assert (s.token, s.password) == (None, None)
    monkeypatch.setenv(ENV_INFLUX_TOKEN, "tok")
    monkeypatch.setenv(ENV_INFLUX_PASSWORD, "pw")
    s = InfluxSettings.from_env(api="v1", database="lab")
    assert (s.token, s.password, s.api, s.database) == ("tok", "pw", "v1", "lab")
    # an explicit value wins over the environment
    assert InfluxSettings.from_env(token="explicit").token == "explicit"
    with pytest.raises(ConfigError):
        InfluxSettings.from_env(api="v9")


# --- TOML files ------------------------------------------------------------------------------------


def test_load_toml(tmp_path: Path) -> None:
    p = tmp_path / "jointmon.toml"
    p.write_text('[mqtt]\nhost = "broker"\nport = 1884\n\n[influx]\napi = "v1"\nflush_interval_s = 2\n')
    assert load_toml(p) == {"mqtt": {"host": "broker", "port": 1884}, "influx": {"api": "v1", "flush_interval_s": 2}}
    assert load_toml(str(p)) == load_toml(p)


def test_load_toml_missing_file_names_it(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        load_toml(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("text", ["[mqtt\nhost = 1\n", "host = \n", "a = 1\na = 2\n", "[mqtt]\nport = 18 83\n"])
def test_load_toml_malformed_names_the_file(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_toml(p)
    assert str(p) in str(info.value)


def test_load_toml_non_utf8_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes('[mqtt]\nhost = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.toml"):
        load_toml(p)


def test_load_toml_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_toml(tmp_path)


# --- section() -------------------------------------------------------------------------------------


def test_section_builds_the_dataclass() -> None:
    data = {"mqtt": {"host": "broker", "port": 1884, "tls": True, "username": "gw"},
            "influx": {"api": "v1", "database": "lab", "flush_interval_s": 2, "batch_size": 100}}
    m = section(data, MqttSettings, "mqtt", "cfg.toml")
    assert m == MqttSettings(host="broker", port=1884, tls=True, username="gw")
    i = section(data, InfluxSettings, "influx", "cfg.toml")
    assert (i.api, i.database, i.flush_interval_s, i.batch_size) == ("v1", "lab", 2, 100)


def test_section_missing_table_gives_defaults() -> None:
    assert section({}, MqttSettings, "mqtt", "cfg.toml") == MqttSettings()
    assert section({"other": {}}, InfluxSettings, "influx", "cfg.toml") == InfluxSettings()


def test_section_unknown_key_names_file_table_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        section({"mqtt": {"hostname": "broker"}}, MqttSettings, "mqtt", "/etc/jointmon.toml")
    msg = str(info.value)
    assert "/etc/jointmon.toml" in msg and "[mqtt]" in msg and "'hostname'" in msg
    assert "host" in msg.split("known:")[1]  # lists the keys that are known


@pytest.mark.parametrize(
    ("cls", "table", "key", "value"),
    [
        (MqttSettings, "mqtt", "port", "1883"),
        (MqttSettings, "mqtt", "port", 1883.0),
        (MqttSettings, "mqtt", "host", 127),
        (MqttSettings, "mqtt", "tls", "yes"),
        (MqttSettings, "mqtt", "tls", 1),
        (MqttSettings, "mqtt", "keepalive_s", [30]),
        (InfluxSettings, "influx", "batch_size", "5000"),
        (InfluxSettings, "influx", "flush_interval_s", "1.0"),
        (InfluxSettings, "influx", "api", 2),
    ],
)
def test_section_wrong_type_names_file_table_and_key(cls: type, table: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        section({table: {key: value}}, cls, table, "site.toml")
    msg = str(info.value)
    assert "site.toml" in msg and f"[{table}]" in msg and key in msg


def test_section_table_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"cfg\.toml: \[mqtt\] must be a table"):
        section({"mqtt": "broker"}, MqttSettings, "mqtt", "cfg.toml")


def test_section_validation_error_names_file_and_table() -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.toml: \[influx\] influx api 'v3'"):
        section({"influx": {"api": "v3"}}, InfluxSettings, "influx", "cfg.toml")
    with pytest.raises(ConfigError, match=r"^cfg\.toml: \[influx\] .*batch_size"):
        section({"influx": {"batch_size": 0}}, InfluxSettings, "influx", "cfg.toml")


def test_section_from_a_real_file(tmp_path: Path) -> None:
    p = tmp_path / "jointmon.toml"
    p.write_text('[mqtt]\nhost = "broker"\nport = 1884\n[influx]\napi = "v1"\nbatch_sise = 10\n')
    data = load_toml(p)
    assert section(data, MqttSettings, "mqtt", p).port == 1884
    with pytest.raises(ConfigError) as info:
        section(data, InfluxSettings, "influx", p)
    assert str(p) in str(info.value) and "[influx]" in str(info.value) and "batch_sise" in str(info.value)


@pytest.mark.parametrize(("cls", "table", "key"), [(MqttSettings, "mqtt", "port"),
                                                   (InfluxSettings, "influx", "flush_interval_s")])
def test_section_rejects_bool_for_a_number(cls: type, table: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        section({table: {key: True}}, cls, table, "cfg.toml")
