"""The gateway's TOML config: the shipped example loads; every bad config names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointmon.errors import ConfigError
from sensor_gateway.config import load_gateway_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "gateway.example.toml"
GOOD_SENSOR = '[[sensors]]\nmatch = "JM-1"\nathlete = "ath-001"\njoint = "knee"\nside = "left"\nsegment = "thigh"\n'


def test_example_config_loads_with_every_table():
    cfg = load_gateway_config(EXAMPLE)
    assert cfg.gateway_id == "gym-a"
    assert [(s.joint, s.segment) for s in cfg.sensors] == [("left_knee", "thigh"), ("left_knee", "shank")]
    assert cfg.mqtt.protocol == 4 and cfg.mqtt.reconnect_max_s == 4.0
    assert cfg.queue.max_bytes == 268435456 and cfg.queue_path.name == "gym-a.queue.sqlite"
    assert cfg.supervisor.silence_s == 5.0 and cfg.ble.adapter_slots == 5
    assert cfg.find("aa:bb", "jm-thigh-01") is cfg.sensors[0] and cfg.find("aa:bb", "other") is None


@pytest.mark.parametrize(("text", "key"), [
    ('[gateway]\nid = "g"\npasword = "x"\n' + GOOD_SENSOR, "pasword"),
    ('[mqtt]\npassword = "secret"\n' + GOOD_SENSOR, "password"),
    ('[mqtt]\nprotocol = 6\n' + GOOD_SENSOR, "protocol"),
    ('[queue]\nmax_bytes = "big"\n' + GOOD_SENSOR, "max_bytes"),
    ('[supervisor]\nsilence_s = -1.0\n' + GOOD_SENSOR, "silence_s"),
    ('[supervisor]\nwatchdog = 1\n' + GOOD_SENSOR, "watchdog"),
    (GOOD_SENSOR.replace('side = "left"', 'side = "middle"'), "side"),
    (GOOD_SENSOR.replace('segment = "thigh"', 'segment = "knee"'), "segment"),
    (GOOD_SENSOR.replace('athlete = "ath-001"\n', ''), "athlete"),
    (GOOD_SENSOR.replace('match = "JM-1"', 'match = 7'), "match"),
    (GOOD_SENSOR + GOOD_SENSOR.replace('joint = "knee"', 'joint = "shoulder"'), "already used"),
    ('[gateway]\nid = "g"\n', "sensors"),
])
def test_bad_config_names_the_key_and_the_file(tmp_path, text, key):
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gateway_config(path)
    assert str(path) in str(err.value) and key in str(err.value)
