"""The CLI as a user runs it: --help everywhere, the demo on both embedded brokers, clear errors."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from jointmon.demo import DemoOptions, run_demo

COMMANDS = ("demo", "simulate", "gateway", "analyze", "grade", "checkin", "eval", "record", "replay")


def jointmon(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jointmon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = jointmon(command, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: jointmon {command}")
    assert "--" in out.stdout  # documents its options


def test_top_level_help_lists_the_commands():
    out = jointmon("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def test_demo_with_the_pure_python_broker(tmp_path):
    """The fallback when mosquitto is not installed: amqtt, in-process; with the live view on a free port."""
    urls: list[str] = []
    seen: dict = {}

    def after(summary):  # the view still serves the finished session
        with urllib.request.urlopen(summary.web_url + "api/state", timeout=10) as resp:
            seen.update(json.loads(resp.read()))

    summary = run_demo(DemoOptions(duration_s=12.0, seed=4, clicks=4, realtime=False, results_dir=tmp_path,
                                   progress=False, broker="amqtt", web_port=0), on_web_url=urls.append,
                       after_session=after)
    assert urls == [summary.web_url] and summary.web_url.startswith("http://127.0.0.1:")
    assert seen["session"] == summary.session_id and seen["ended"] is True
    assert [(j["athlete"], j["joint"]) for j in seen["joints"]] == [(summary.sim.athlete, summary.sim.joint)]
    assert sum(e["type"] == "click" for e in seen["events"]) == len(summary.clicks.pairs)
    assert [g["final"] for g in seen["grades"]] == [True]  # the final grade came back through amqtt
    assert summary.broker == "amqtt"
    run = summary.run
    assert run.samples_published == sum(run.samples_generated.values()) == sum(run.samples_analysed.values())
    assert len(summary.clicks.pairs) == len(summary.sim.labels) == 4
    assert summary.clicks.false_positives == []
    assert len(summary.rep_peaks_deg) == summary.sim.rep_count
    assert summary.results_path.exists()
    text = summary.text()
    assert "4 found / 4 injected, 0 false, 0 missed" in text
    # The final grade with its reasons and the not-a-diagnosis wording, the same grade the live view got.
    assert [g.grade for g in run.grades] == [g["grade"] for g in seen["grades"]]
    assert f"grade      {summary.sim.joint}: {run.grades[0].grade.upper()}" in text
    assert "pain and swelling were not reported" in text and "not a diagnosis" in text


def test_demo_command_prints_the_summary(tmp_path):
    out = jointmon("demo", "--duration", "8", "--fast", "--no-progress", "--results", str(tmp_path), "--web-port", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("live view: http://127.0.0.1:")
    assert "Session demo-" in out.stdout
    assert "found /" in out.stdout and "injected" in out.stdout
    assert len(list(Path(tmp_path).glob("demo-*.sqlite"))) == 1


def test_bad_gateway_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nid = "gym"\n[[sensors]]\nmatch = "X"\nathlete = "ath-1"\njoint = "left_knee"\n'
                   'segment = "elbow"\n')
    out = jointmon("gateway", "--config", str(cfg))
    assert out.returncode == 2
    assert str(cfg) in out.stderr and "segment" in out.stderr and "elbow" in out.stderr


def test_unreachable_broker_is_a_clear_error():
    out = jointmon("simulate", "--duration", "1", "--fast", "--mqtt", "mqtt://127.0.0.1:1", timeout=60)
    assert out.returncode == 2
    assert "no MQTT connection to mqtt://127.0.0.1:1" in out.stderr


def test_password_in_url_is_refused():
    out = jointmon("simulate", "--mqtt", "mqtt://user:secret@127.0.0.1:1883")
    assert out.returncode == 2 and "JOINTMON_MQTT_PASSWORD" in out.stderr


def test_demo_without_web_and_busy_port(tmp_path):
    out = jointmon("demo", "--duration", "4", "--fast", "--no-progress", "--results", str(tmp_path), "--no-web")
    assert out.returncode == 0, out.stderr
    assert "live view" not in out.stdout and "Session demo-" in out.stdout
    from analysis.web_view import WebView

    with WebView("s", None, port=0) as busy:
        out = jointmon("demo", "--duration", "4", "--fast", "--no-progress", "--results", str(tmp_path),
                       "--web-port", str(busy.port))
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy.port}" in out.stderr and "--web-port" in out.stderr
    out = jointmon("demo", "--web-port", "70000")
    assert out.returncode == 2 and "a port number 1-65535, or 0 for any free port" in out.stderr
