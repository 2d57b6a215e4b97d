"""Docker health check of a jointmon service: its retained status on the broker says ``online``.

    python healthcheck.py MQTT_URL COMPONENT COMPONENT_ID     # e.g. mqtt://jointmon@mosquitto:1883 analysis analysis-1

The gateway and the analysis publish a retained status on ``jointmon/v1/status/{component}/{id}`` with a
last will ``offline``, so the broker itself says whether the service is connected and running.
Exit 0 when the status is ``online``; 1 when it is anything else, does not come within ``--timeout``
seconds, or the broker cannot be reached. The password comes from JOINTMON_MQTT_PASSWORD.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from jointmon.config import MqttSettings
from jointmon.errors import JointmonError
from jointmon.messages import Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import status_topic


def read_status(url: str, component: str, component_id: str, timeout_s: float) -> Status | None:
    """The retained status of the component, or None if none arrives within ``timeout_s`` seconds."""
    settings = MqttSettings.from_url(url)
    topic = status_topic(component, component_id)
    got: list[Status] = []
    done = threading.Event()

    class Waiter(ConnectionWaiter):
        def on_connected(self, client: object) -> None:
            client.subscribe(topic, qos=1)  # type: ignore[attr-defined]

    client = make_client(settings, f"jointmon-health-{component}-{time.time_ns() % 10**9}")
    waiter = Waiter(client, "healthcheck")

    def on_message(_client: object, _userdata: object, msg: object) -> None:
        try:
            got.append(Status.from_json(msg.payload))  # type: ignore[attr-defined]
        except JointmonError:
            got.append(Status(component, component_id, "malformed", 0))
        done.set()

    client.on_message = on_message
    deadline = time.monotonic() + timeout_s
    connect(client, settings, waiter, timeout_s=timeout_s)
    try:
        done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Exit 0 if the jointmon component's retained MQTT status is online.")
    p.add_argument("mqtt_url", help="broker, e.g. mqtt://jointmon@mosquitto:1883 (password: JOINTMON_MQTT_PASSWORD)")
    p.add_argument("component", help="gateway or analysis")
    p.add_argument("component_id", help="the gateway id or the analysis --worker-id")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the status [%(default)s]")
    args = p.parse_args(argv)
    try:
        status = read_status(args.mqtt_url, args.component, args.component_id, args.timeout)
    except JointmonError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status is None:
        print(f"unhealthy: no status from {args.component}/{args.component_id} within {args.timeout:g} s",
              file=sys.stderr)
        return 1
    print(f"{args.component}/{args.component_id}: {status.state}")
    return 0 if status.state == "online" else 1


if __name__ == "__main__":
    sys.exit(main())
