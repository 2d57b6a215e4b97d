"""An MQTT broker for the demo when none is given: mosquitto as a child process when it is
installed, else the pure-Python amqtt broker in a background thread.

amqtt speaks MQTT 3.1.1 only and has no shared subscriptions, so jointmon's clients use 3.1.1
and nothing in the demo path depends on broker-specific behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import subprocess
import tempfile
import threading
from pathlib import Path

from jointmon.processes import LOOPBACK, find_program, free_port, wait_for_port

log = logging.getLogger("jointmon.broker")

# Mosquitto's default max_queued_messages is 1000: past that it silently drops QoS 1 messages
# queued for a slow or briefly absent subscriber. A 16 kHz sensor sends 40 frames/s, so a
# 30 s stall of the analysis is ~1200 frames per sensor: allow far more, bounded by memory.
MOSQUITTO_MAX_QUEUED_MESSAGES = 1_000_000


def mosquitto_config(port: int, data_dir: Path, host: str = LOOPBACK, *,
                     max_queued_messages: int = MOSQUITTO_MAX_QUEUED_MESSAGES,
                     log_path: Path | None = None) -> str:
    """Mosquitto 2.0 config for a local broker on ``host:port`` with persistence in ``data_dir``."""
    return f"""\
listener {port} {host}
allow_anonymous true
# Run as ourselves: started as root, mosquitto otherwise switches to user "mosquitto", which
# cannot write the persistence file or the log in our temp dir. (No effect when not root.)
user {pwd.getpwuid(os.geteuid()).pw_name}
persistence true
persistence_location {data_dir}/
# Save every second, not only at shutdown, so a crash loses at most ~1 s of queued state.
autosave_interval 1
max_queued_messages {max_queued_messages}
# QoS 1 messages unacknowledged per client at a time (default 20); more keeps a fast subscriber
# busy without changing delivery guarantees.
max_inflight_messages 100
log_dest file {log_path or data_dir / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""


def find_mosquitto() -> str | None:
    return find_program("mosquitto")


class EmbeddedBroker:
    """Context manager: ``with EmbeddedBroker() as b: ... b.host, b.port``. ``prefer`` chooses
    ``"mosquitto"`` (if installed) or ``"amqtt"``."""

    def __init__(self, prefer: str = "mosquitto", host: str = LOOPBACK, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.kind = "mosquitto" if prefer == "mosquitto" and find_mosquitto() else "amqtt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self.kind == "mosquitto":
            self._start_mosquitto()
            up = wait_for_port(self.host, self.port, 10.0)
        else:  # amqtt says when it listens (and logs errors for a bare TCP probe)
            up = self._start_amqtt()
        if not up:
            self.stop()
            raise RuntimeError(f"embedded {self.kind} broker did not open {self.host}:{self.port}")
        log.info("embedded MQTT broker (%s) on %s", self.kind, self.url)
        return self

    def _start_mosquitto(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="jointmon-mosquitto-")
        data = Path(self._tmp.name)
        conf = data / "mosquitto.conf"
        conf.write_text(mosquitto_config(self.port, data, self.host))
        self._proc = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_amqtt(self) -> bool:
        from amqtt.broker import Broker

        ready = threading.Event()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def serve() -> None:
            self._stop_event = asyncio.Event()
            broker = Broker(config)
            await broker.start()
            ready.set()
            await self._stop_event.wait()
            await broker.shutdown()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            finally:
                self._loop.close()

        # amqtt logs every packet at INFO; keep the demo's terminal for the demo.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        return ready.wait(10.0)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._thread is not None and self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(10)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
