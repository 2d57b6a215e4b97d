"""The built-in live web view: a page on 127.0.0.1 with live angle charts, the click timeline, alerts,
red-flag grades, sensor health and the athlete check-in, for when no Grafana runs.

:class:`WebView` is a :class:`analysis.result_sink.ResultSink` (add it to the analysis' FanOut): the
angles and events it gets go to a :class:`analysis.live_feed.LiveFeed`, from which every open page is
updated by server push (Server-Sent Events on ``/events``). Its own MQTT client listens to the grades
and status topics and publishes the page's check-ins as self-reports on the reports topic, the same
path as ``jointmon checkin``, so the analysis grades with them.

The server is the standard library's ``ThreadingHTTPServer``, on purpose: it serves a few local
browsers, the data comes from threads (the analysis worker, paho's network thread), and SSE is a
long-lived response written chunk by chunk, which a thread per client does plainly; an asyncio
framework would add a dependency and a loop to bridge into for no gain at this scale. Every request
is answered or refused with a clear status; a client that goes away just ends its thread.

Charts: uPlot (MIT), vendored under ``analysis/web/vendor/uplot`` with its LICENSE and served from the
package, so the page works offline (no CDN).

Routes: ``GET /`` the page, ``GET /static/...`` its files, ``GET /events`` the SSE stream (a
``snapshot`` event, then ``joint``/``angles``/``event``/``grade``/``status``/``checkin``/``end``),
``GET /api/state`` the snapshot as JSON, ``POST /api/checkin`` a check-in (JSON, see
:func:`analysis.checkin.parse_checkin`; 400 with ``{"error": ...}`` for bad input).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from analysis.checkin import STANDARD_JOINTS, CheckInError, combined_report, parse_checkin
from analysis.live_feed import LiveFeed, to_json
from analysis.result_sink import JointKey
from jointmon.config import MqttSettings
from jointmon.const import MQTT_QOS
from jointmon.errors import JointmonError, MessageError
from jointmon.messages import JointEvent, JointGrade, Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.processes import LOOPBACK
from jointmon.topics import GRADES_SUBSCRIPTION, STATUS_SUBSCRIPTION, reports_topic

log = logging.getLogger("jointmon.web")

DEFAULT_PORT = 8787
KEEPALIVE_S = 15.0  # an SSE comment this often: a closed browser is noticed (the write fails)
FLUSH_INTERVAL_S = 0.1  # angle batches to the browser: 10 a second
MAX_BODY_BYTES = 4096  # a check-in is ~100 bytes
PUBLISH_TIMEOUT_S = 5.0
FINAL_GRADE_WAIT_S = 3.0
# With the live view on, the analysis should grade this often (s): a check-in shows in the grade soon.
WEB_GRADE_INTERVAL_S = 5.0

WEB_DIR = Path(__file__).with_name("web")  # installed with the package (package-data in pyproject.toml)
# The files the page may fetch: URL path -> file under analysis/web (a fixed map, so no path can
# reach outside it).
_STATIC = {
    "/": "index.html",
    "/static/live_view.js": "live_view.js",
    "/static/live_view.css": "live_view.css",
    "/static/uPlot.iife.min.js": "vendor/uplot/uPlot.iife.min.js",
    "/static/uPlot.min.css": "vendor/uplot/uPlot.min.css",
    "/static/uPlot-LICENSE.txt": "vendor/uplot/LICENSE",
}
# Only this page's own files run in it: the page must never need the network.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'"


class WebView:
    """The live view's server and sink. ``start()`` binds 127.0.0.1:``port`` (0 = a free port; the
    bound one is in ``.port`` / ``.url``) and connects to the broker; ``close()`` (the sink's, called
    when the analysis stops) marks the session over; ``shutdown()`` stops the server and the MQTT client.

    ``session``: the analysis' session id (check-ins are reported for it, grades of other sessions are
    ignored); ``mqtt``: the broker of the analysis (None: no check-ins, grades or statuses);
    ``rate_hz`` / ``history_s``: angle samples per second per joint to the browser and how many seconds
    a newly opened page gets; ``joints``: (athlete, joint) pairs offered in the check-in before their
    sensors stream; ``expect_grades``: the analysis publishes red-flag grades (False with grading off).
    """

    def __init__(self, session: str, mqtt_settings: MqttSettings | None, *, port: int = DEFAULT_PORT,
                 rate_hz: float = 20.0, history_s: float = 120.0,
                 joints: list[tuple[str, str]] | None = None, expect_grades: bool = True) -> None:
        self.session = session
        self.feed = LiveFeed(session, rate_hz=rate_hz, history_s=history_s)
        self.mqtt_settings = mqtt_settings
        self.requested_port = port
        self.expected_joints = list(joints or [])
        self.expect_grades = expect_grades
        self.counters: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._client: mqtt.Client | None = None
        self._waiter: ConnectionWaiter | None = None
        self._checkin_lock = threading.Lock()  # one check-in at a time: the combined report stays in order

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the web view is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def start(self) -> WebView:
        try:
            server = _Server((LOOPBACK, self.requested_port), _Handler)
        except OSError as exc:
            raise JointmonError(f"live view: cannot listen on {LOOPBACK}:{self.requested_port} ({exc.strerror}); "
                                "choose another --web-port (0 = any free port) or --no-web") from None
        server.view = self
        self._server = server
        self._spawn(server.serve_forever, "web-http")
        self._spawn(self._pump, "web-pump")
        if self.mqtt_settings is not None:
            self._start_mqtt(self.mqtt_settings)
        log.info("live view on %s", self.url)
        return self

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _start_mqtt(self, settings: MqttSettings) -> None:
        client = make_client(settings, f"jointmon-web-{time.time_ns() % 10**9}")
        waiter = ConnectionWaiter(client, "live view")
        waiter.on_connected = lambda c: c.subscribe([(GRADES_SUBSCRIPTION, MQTT_QOS), (STATUS_SUBSCRIPTION, MQTT_QOS)])
        client.on_message = self._on_message
        connect(client, settings, waiter)
        self._client, self._waiter = client, waiter

    def stop_mqtt(self) -> None:
        """Disconnect from the broker (before it goes away); the page stays up with what it has."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def shutdown(self) -> None:
        """Stop serving: open pages get the end of their stream; the MQTT client disconnects. Idempotent."""
        if self._stopping.is_set():
            return
        self.feed.end()
        self.stop_mqtt()
        self._stopping.set()
        self.feed.wake()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> WebView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _pump(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self.feed.flush()

    # --- ResultSink (the analysis worker thread) -------------------------------------------------
    def angles(self, key: JointKey, t_ns: np.ndarray, angles: Mapping[str, np.ndarray]) -> None:
        try:
            self.feed.add_angles(key, t_ns, angles)
        except Exception:  # the view must never stop the analysis
            self.counters["dropped_angles_internal"] += 1
            log.exception("live view: angles of %s/%s not shown", key.athlete, key.joint)

    def event(self, event: JointEvent) -> None:
        try:
            self.feed.add_event(event)
        except Exception:
            self.counters["dropped_event_internal"] += 1
            log.exception("live view: %s event not shown", event.type)

    def close(self) -> None:
        """The analysis stopped: the session is over (the page says so and takes no more check-ins).

        The analysis publishes its final grades just before it closes its sinks; they come back over
        MQTT, so wait for them (at most ``FINAL_GRADE_WAIT_S``) to reach the page before its stream ends."""
        deadline = time.monotonic() + FINAL_GRADE_WAIT_S
        while (self.expect_grades and self._client is not None and time.monotonic() < deadline
               and not self.feed.final_grades_in()):
            time.sleep(0.02)
        self.feed.end()

    # --- MQTT (paho's network thread) ------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            if "/grades/" in msg.topic:
                self.feed.set_grade(JointGrade.from_json(msg.payload))
            elif msg.payload:  # an empty retained message clears a status
                self.feed.set_status(Status.from_json(msg.payload))
        except MessageError as exc:
            self.counters["dropped_malformed_message"] += 1
            log.warning("live view: malformed message on %s: %s", msg.topic, exc)

    # --- check-in (an HTTP handler thread) -------------------------------------------------------
    def checkin(self, raw: Any) -> dict[str, Any]:
        """Validate, keep and publish one check-in; returns the response body. Raises CheckInError (bad
        input: 400), _RefusedError (session over, no broker: 409/503)."""
        checkin = parse_checkin(raw, time.time_ns())
        if self.feed.ended:
            raise _RefusedError(HTTPStatus.CONFLICT, "the session is over and its grade is final: check-ins are "
                                                "taken while the analysis runs")
        client = self._client
        if client is None or self._waiter is None or not self._waiter.connected.is_set():
            raise _RefusedError(HTTPStatus.SERVICE_UNAVAILABLE, "no connection to the MQTT broker: the check-in "
                                                           "cannot reach the grading; try again")
        with self._checkin_lock:
            phases = self.feed.add_checkin(checkin)
            report = combined_report(phases, self.session)
            topic = reports_topic(report.athlete, report.joint)
            info = client.publish(topic, report.to_json(), qos=MQTT_QOS)
            info.wait_for_publish(timeout=PUBLISH_TIMEOUT_S)
            if not info.is_published():
                self.counters["checkins_unacknowledged"] += 1
                raise _RefusedError(HTTPStatus.SERVICE_UNAVAILABLE, f"the broker did not acknowledge the check-in "
                                                               f"within {PUBLISH_TIMEOUT_S:.0f} s; try again")
        self.counters["checkins"] += 1
        log.info("check-in %s/%s %s: pain %s swelling %s", checkin.athlete, checkin.joint, checkin.phase,
                 checkin.pain, checkin.swelling)
        return {"ok": True, "checkin": checkin.as_dict(), "report": json.loads(report.to_json()), "topic": topic}

    def page_config(self) -> dict[str, Any]:
        """What the check-in form offers: the joints seen or expected, and the standard joint ids."""
        seen = list(dict.fromkeys([*self.expected_joints, *self.feed.athletes_joints()]))
        return {"session": self.session, "joints": [{"athlete": a, "joint": j} for a, j in seen],
                "standard_joints": list(STANDARD_JOINTS), "checkin": self._client is not None}


class _RefusedError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an open page never keeps the process alive
    view: WebView


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "jointmon-live"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class' name)
        log.debug("%s %s", self.address_string(), format % args)

    # --- helpers ---
    def _send(self, status: int, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, to_json(data).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _local_host(self) -> bool:
        """Refuse other Host names: a web page elsewhere could rebind its own name to 127.0.0.1
        (DNS rebinding) and read the health data on this page."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("127.0.0.1", "localhost", "::1")

    # --- routes ---
    def do_HEAD(self) -> None:  # noqa: N802  (http.server's naming)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._local_host():
            return self._error(HTTPStatus.FORBIDDEN, "only http://127.0.0.1 or http://localhost serve this page")
        path = self.path.split("?", 1)[0]
        view = self.server.view
        if path == "/events":
            return self._stream(view)
        if path == "/api/state":
            _, snap = view.feed.snapshot()
            return self._json(HTTPStatus.OK, {**snap, "config": view.page_config(), "counters": {
                **view.counters, **view.feed.counters}})
        if path == "/api/config":
            return self._json(HTTPStatus.OK, view.page_config())
        name = _STATIC.get(path)
        if name is None:
            return self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        body = (WEB_DIR / name).read_bytes()
        ctype = "text/plain" if name.endswith("LICENSE") else mimetypes.guess_type(name)[0] or "text/plain"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        return self._send(HTTPStatus.OK, body, ctype, cache=name.startswith("vendor/"))

    def do_POST(self) -> None:  # noqa: N802
        if not self._local_host():
            return self._error(HTTPStatus.FORBIDDEN, "only http://127.0.0.1 or http://localhost take check-ins")
        if self.path.split("?", 1)[0] != "/api/checkin":
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}")
        # JSON only: a cross-site form cannot send it without a CORS preflight, which is never granted.
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the check-in as application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a check-in is at most {MAX_BODY_BYTES} bytes")
        try:
            raw = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}")
        view = self.server.view
        try:
            body = view.checkin(raw)
        except CheckInError as exc:
            view.counters["checkins_rejected"] += 1
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except _RefusedError as exc:
            view.counters["checkins_refused"] += 1
            return self._error(exc.status, str(exc))
        return self._json(HTTPStatus.OK, body)

    def _stream(self, view: WebView) -> None:
        """Server-Sent Events: a snapshot, then every new message, until the client or the server goes
        (on shutdown the messages still in the log, ending with ``end``, are sent first)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # the stream ends with the connection (no length)
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        feed = view.feed
        view.counters["sse_clients"] += 1
        try:
            cursor, snap = feed.snapshot()
            self._write_event("snapshot", to_json({**snap, "config": view.page_config()}), retry_ms=2000)
            last_write = time.monotonic()
            while True:
                stopping = view._stopping.is_set()
                cursor, messages = feed.since(cursor, timeout_s=0.0 if stopping else 1.0)
                if messages is None:  # fell behind the log: start over from a snapshot
                    cursor, snap = feed.snapshot()
                    self._write_event("snapshot", to_json({**snap, "config": view.page_config()}))
                    last_write = time.monotonic()
                    continue
                for name, data in messages:
                    self._write_event(name, data)
                if messages:
                    last_write = time.monotonic()
                elif time.monotonic() - last_write > KEEPALIVE_S:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    last_write = time.monotonic()
                if stopping:
                    break
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page was closed
        finally:
            view.counters["sse_clients_closed"] += 1

    def _write_event(self, name: str, data: str, retry_ms: int | None = None) -> None:
        head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
        self.wfile.write(f"{head}event: {name}\ndata: {data}\n\n".encode())
        self.wfile.flush()
