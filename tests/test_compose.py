"""docker-compose.yml, deploy/compose.ble.yml, the Dockerfile and .env.example, checked statically.

No Docker engine runs here, so nothing is started: the files are parsed (PyYAML) and checked against
the repository and the code: every file a service mounts or builds from exists, every JOINTMON_* name
is one the code reads, every ${VAR} has a line in .env.example, every service has a health check, the
jointmon commands parse with the real CLI, and the mounted configs fit together (the gateway TOML
loads, the Grafana provider path is where the dashboards are mounted, the datasource's variables are
set). The MQTT health check script runs against a real mosquitto.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import MosquittoServer

from jointmon.cli import build_parser
from jointmon.messages import Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import status_topic
from sensor_gateway.config import load_gateway_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
BLE_OVERRIDE = ROOT / "deploy" / "compose.ble.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "jointmon" / "healthcheck.py"
CODE_DIRS = ("jointmon", "sensor_gateway", "analysis", "firmware_sim")
SERVICES = {"mosquitto", "influxdb", "grafana", "gateway", "analysis"}
JOINTMON_SERVICES = {"gateway", "analysis"}
# Keys a service may have here (a typo such as "healtcheck" would otherwise pass silently).
SERVICE_KEYS = {"image", "build", "restart", "command", "environment", "volumes", "ports", "healthcheck", "depends_on",
                "network_mode", "user"}
HOST_PATHS = {"/var/run/dbus"}  # absolute host paths a service may mount (the BLE gateway's D-Bus)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{path}: no services"
    return data


def env_example() -> dict[str, str]:
    out = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            key, sep, value = text.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f".env.example: bad line {raw!r}"
            assert key not in out, f".env.example: {key} twice"
            out[key] = value
    return out


_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|\$(\w+)")


def variables(text: str) -> set[str]:
    """Every variable ``text`` interpolates (``${A}``, ``${A:-x}``, ``${A:-${B}}``, ``$A``; ``$$`` is a literal $)."""
    out: set[str] = set()
    for m in _VAR.finditer(text):
        if m.group(0) == "$$":
            continue
        out.add(m.group(1) or m.group(4))
        if m.group(3):
            out |= variables(m.group(3))
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ``text`` with ``env`` (``:-`` default when unset or empty, ``:?`` error)."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return interpolate(arg or "", env)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise ValueError(f"{name} required: {arg}")
        return value or ""
    return _VAR.sub(one, text)


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML tree (keys and values)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def code_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (named volumes left out)."""
    out = []
    for v in service.get("volumes", []):
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def test_compose_files_parse_and_name_the_stack() -> None:
    base, ble = load(COMPOSE), load(BLE_OVERRIDE)
    assert set(base["services"]) == SERVICES
    assert set(ble["services"]) == {"gateway"}, "the BLE override only replaces the gateway"
    for name, service in [*base["services"].items(), *(("ble " + k, v) for k, v in ble["services"].items())]:
        assert set(service) <= SERVICE_KEYS, f"{name}: unexpected keys {set(service) - SERVICE_KEYS}"
        image = service.get("image", "")
        assert image.startswith("jointmon") or re.search(r":\d", image) or name.startswith("ble"), \
            f"{name}: pin the image version ({image!r})"
    assert base["services"]["influxdb"]["image"].startswith("influxdb:2")
    for name in JOINTMON_SERVICES:
        assert base["services"][name]["build"]["context"] == "."
    gateway = ble["services"]["gateway"]
    assert gateway["network_mode"] == "host"
    assert ("/var/run/dbus", "/var/run/dbus") in bind_mounts(gateway)


def test_every_service_has_a_healthcheck() -> None:
    ble = [("ble " + k, v) for k, v in load(BLE_OVERRIDE)["services"].items()]
    services = [*load(COMPOSE)["services"].items(), *ble]
    for name, service in services:
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: {test}"


def test_every_file_a_service_uses_is_in_the_repository() -> None:
    # Relative paths of both files resolve against docker-compose.yml's folder (compose: the first file's).
    for path in (COMPOSE, BLE_OVERRIDE):
        for name, service in load(path)["services"].items():
            for source, target in bind_mounts(service):
                if source.startswith("/"):
                    assert source in HOST_PATHS, f"{path.name} {name}: host path {source}"
                    continue
                assert (ROOT / source).exists(), f"{path.name} {name}: {source} (mounted at {target}) is missing"
            if "build" in service:
                context = ROOT / service["build"]["context"]
                assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
    # What the Dockerfile copies from the build context exists.
    for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", DOCKERFILE.read_text(), flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is missing"
    # The influxdb:2 image runs only executable *.sh init scripts; mosquitto's start script is run by sh.
    assert os.access(ROOT / "deploy/influxdb/create-dbrp.sh", os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", "deploy/influxdb/create-dbrp.sh"], cwd=ROOT, capture_output=True,
                          text=True).stdout.split()
    assert not mode or mode[0] == "100755", "commit create-dbrp.sh as executable (git update-index --chmod=+x)"


def test_jointmon_environment_names_are_read_by_the_code() -> None:
    code = code_text()
    files = [COMPOSE, BLE_OVERRIDE, ENV_EXAMPLE, DOCKERFILE]
    names = {n for f in files for n in re.findall(r"\bJOINTMON_[A-Z0-9_]+", f.read_text())}
    assert names, "the jointmon services get their secrets as JOINTMON_* variables"
    unread = sorted(n for n in names if f'"{n}"' not in code)
    assert not unread, f"JOINTMON_* names no code reads: {unread}"
    services = load(COMPOSE)["services"]
    assert "JOINTMON_MQTT_PASSWORD" in environment(services["gateway"])
    assert {"JOINTMON_MQTT_PASSWORD", "JOINTMON_INFLUX_TOKEN"} <= set(environment(services["analysis"]))
    for name, service in services.items():  # secrets are interpolated from .env, never literal
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|TOKEN", key):
                assert variables(value), f"{name}: {key} must come from .env, not be written here"


def test_env_example_covers_every_variable() -> None:
    example = env_example()
    used = {v for f in (COMPOSE, BLE_OVERRIDE) for s in strings(load(f)) for v in variables(s)}
    assert not used - example.keys(), f"${{VAR}}s missing from .env.example: {sorted(used - example.keys())}"
    assert not example.keys() - used, f".env.example lines nothing uses: {sorted(example.keys() - used)}"
    text = COMPOSE.read_text()
    for secret in ("MQTT_PASSWORD", "INFLUX_ADMIN_PASSWORD", "INFLUX_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required (${{{secret}:?...}})"
        assert "change-me" in example[secret], f".env.example: {secret} must be an obvious placeholder"
    # Everything interpolates with the example values (a required variable unset would raise).
    for f in (COMPOSE, BLE_OVERRIDE):
        for s in strings(load(f)):
            interpolate(s, example)


def _command(service: dict[str, Any]) -> list[str]:
    return [interpolate(str(a), env_example()) for a in service["command"]]


def test_jointmon_commands_parse_with_the_cli() -> None:
    base, ble = load(COMPOSE)["services"], load(BLE_OVERRIDE)["services"]
    parser = build_parser()
    sim = parser.parse_args(_command(base["gateway"]))
    assert sim.command == "simulate" and sim.mqtt.startswith("mqtt://") and sim.gateway_id == "gw-sim"
    analysis = parser.parse_args(_command(base["analysis"]))
    assert analysis.command == "analyze" and analysis.path is None  # live, not offline
    assert analysis.influx == "http://influxdb:8086" and analysis.influx_api == "v2"
    assert analysis.influx_db == env_example()["INFLUX_BUCKET"] and analysis.influx_org == env_example()["INFLUX_ORG"]
    assert analysis.results.startswith("/var/lib/jointmon/") and analysis.history.startswith("/var/lib/jointmon/")
    for service, args in (("gateway", sim), ("analysis", analysis)):  # the health check asks for the right status
        check = [interpolate(a, env_example()) for a in base[service]["healthcheck"]["test"]]
        assert check[2] == "/usr/local/lib/jointmon/healthcheck.py" and check[3] == args.mqtt
        assert check[4:] == ["gateway", args.gateway_id] if service == "gateway" else ["analysis", args.worker_id]
    assert "COPY deploy/jointmon/healthcheck.py /usr/local/lib/jointmon/healthcheck.py" in DOCKERFILE.read_text()
    ble_args = parser.parse_args(_command(ble["gateway"]))
    assert ble_args.command == "gateway" and not ble_args.scan
    mounts = {target: source for source, target in bind_mounts(ble["gateway"])}
    cfg = load_gateway_config(ROOT / mounts[ble_args.config])  # the mounted config loads
    check = [interpolate(a, env_example()) for a in ble["gateway"]["healthcheck"]["test"]]
    assert check[4:] == ["gateway", cfg.gateway_id]
    # Host network: the broker is the port docker-compose.yml publishes on the host.
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", int(env_example()["MQTT_PORT"]))
    assert cfg.queue.path.startswith("/var/lib/jointmon/")


def test_mounted_configs_fit_together() -> None:
    services = load(COMPOSE)["services"]
    # Grafana: provisioning and dashboards where the provider and Grafana look for them; the datasource's
    # $VARIABLES are set in Grafana's environment.
    grafana = {target: source for source, target in bind_mounts(services["grafana"])}
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load(next((provisioning / "dashboards").glob("*.yml")).read_text())["providers"]
    dashboards = ROOT / grafana[provider["options"]["path"]]
    assert sorted(p.name for p in dashboards.glob("*.json")), "no dashboards where the provider looks"
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()
    datasource = yaml.safe_load(next((provisioning / "datasources").glob("*.yml")).read_text())
    datasource_vars = {v for s in strings(datasource) for v in variables(s)}
    assert datasource_vars and datasource_vars <= set(environment(services["grafana"])), datasource_vars
    # mosquitto: the config is where the start script runs it from, and the password file is where it looks.
    mosq = {target: source for source, target in bind_mounts(services["mosquitto"])}
    conf = (ROOT / mosq["/mosquitto/config/mosquitto.conf"]).read_text()
    start = (ROOT / mosq[services["mosquitto"]["command"][-1]]).read_text()
    (password_file,) = re.findall(r"^password_file\s+(\S+)", conf, flags=re.M)
    assert f"passwd={password_file}" in start and "mosquitto -c /mosquitto/config/mosquitto.conf" in start
    assert re.search(r"^allow_anonymous false", conf, flags=re.M)
    assert {"MQTT_USER", "MQTT_PASSWORD"} <= set(environment(services["mosquitto"]))
    # influxdb: the init script uses the setup variables the service sets (BUCKET_ID: exported by the image).
    influx = services["influxdb"]
    script = next(ROOT / s for s, t in bind_mounts(influx) if t.startswith("/docker-entrypoint-initdb.d/"))
    used = variables(script.read_text()) - {"DOCKER_INFLUXDB_INIT_BUCKET_ID"}
    assert used <= set(environment(influx)), used - set(environment(influx))
    assert "v1 dbrp create" in script.read_text() and "--rp autogen" in script.read_text()
    assert environment(influx)["DOCKER_INFLUXDB_INIT_MODE"] == "setup"


# ------------------------------------------------------------------------- the health check script
def _publish_status(url: str, status: Status) -> None:
    from jointmon.config import MqttSettings

    settings = MqttSettings.from_url(url)
    client = make_client(settings, f"test-status-{time.time_ns()}")
    connect(client, settings, ConnectionWaiter(client, "test"))
    try:
        client.publish(status_topic(status.component, status.component_id), status.to_json(), qos=1,
                       retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _healthcheck(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK_SCRIPT), url, *args, "--timeout", "2"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_healthcheck_script_reads_the_retained_status(mosquitto: MosquittoServer) -> None:
    missing = _healthcheck(mosquitto.url, "analysis", "analysis-1")
    assert missing.returncode == 1 and "no status" in missing.stderr
    _publish_status(mosquitto.url, Status("analysis", "analysis-1", "online", time.time_ns()))
    online = _healthcheck(mosquitto.url, "analysis", "analysis-1")
    assert online.returncode == 0, online.stderr
    assert online.stdout.strip() == "analysis/analysis-1: online"
    _publish_status(mosquitto.url, Status("gateway", "gw-sim", "offline", time.time_ns()))
    assert _healthcheck(mosquitto.url, "gateway", "gw-sim").returncode == 1
    down = _healthcheck("mqtt://127.0.0.1:1", "gateway", "gw-sim")  # nothing listens on port 1
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_interpolation_helpers() -> None:
    assert variables("a ${A} ${B:-x} ${C:-${D}} $E $$F ${G:?need G}") == {"A", "B", "C", "D", "E", "G"}
    assert interpolate("${A:-${B}}-${C:-c}-$$x", {"A": "", "B": "b"}) == "b-c-$x"
    with pytest.raises(ValueError, match="need G"):
        interpolate("${G:?need G}", {})
    assert json.loads(json.dumps(env_example()))  # plain KEY=value lines
