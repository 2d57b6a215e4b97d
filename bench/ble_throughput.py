"""Bluetooth notification throughput per sensor, over a real BLE host stack (Bumble) on a virtual radio.

    python bench/ble_throughput.py [--sensors 4] [--seconds 30] [--speed 1] [--mqtt URL] [--json FILE]

``--sensors`` simulated sensors at full rates (IMU 200 Hz, microphone 16 kHz) stream ``--seconds`` of session
as Bumble GATT peripherals to one gateway (the real bleak code on the Bumble backend, publishing to MQTT), on a
virtual radio whose airtime all connections share: the 1M PHY with data length extension (~97 kB/s of
application payload) or the 2M PHY (~175 kB/s), docs/protocol.md §2 "Bluetooth budget". For each microphone
encoding (PCM16, IMA ADPCM) and PHY it prints, per sensor, the notification throughput that reached the gateway
(payload + 3-byte ATT header, B/s of session time) against the budget of one sensor, what the sensors' TX rings
dropped, and the radio's utilisation.

The virtual radio is a throughput model (shared airtime, HCI flow control, 8 controller buffers, 251-byte ACL
packets), not a radio: no connection events, no retransmissions. A broker is needed (``--mqtt``, else a
mosquitto is started from ``tests/servers.py``). CPU: ~0.4 ms per notification for sensors, stack and gateway
together, so 4 PCM16 sensors take ~0.3 of a core per real-time second (``--speed`` multiplies it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from firmware_sim.bumble_virtual import PHY_BYTES_PER_S  # noqa: E402 - after the path set-up
from jointmon.bumble_session import (  # noqa: E402
    BUDGET_BPS,
    multi_sensor_session,
    run_ble_session,
    sensor_throughput,
)
from jointmon.config import MqttSettings  # noqa: E402

VARIANTS = [("pcm16", "1m"), ("pcm16", "2m"), ("ima_adpcm", "1m"), ("ima_adpcm", "2m")]


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from servers import MosquittoServer

    with tempfile.TemporaryDirectory() as d, MosquittoServer(workdir=Path(d) / "mosquitto") as server:
        yield server.url


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensors", type=int, default=4, help="sensors on the one virtual radio [%(default)s]")
    ap.add_argument("--seconds", type=float, default=30.0, help="session length, s [%(default)s]")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="real-time multiple of the sessions (above 1, a busy CPU adds drops) [%(default)s]")
    ap.add_argument("--mqtt", metavar="URL", help="broker (default: a mosquitto started for the run)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    sim = multi_sensor_session(args.sensors, args.seconds)
    rows = []
    print(f"{args.sensors} sensors, {args.seconds:.0f} s of session at {args.speed:g}x, one virtual radio\n")
    print(f"{'mic':9s} {'PHY':3s} {'need/sensor':>11s} {'budget':>7s} {'delivered/sensor (min..max)':>28s} "
          f"{'of need':>7s} {'TX drops':>8s} {'radio':>6s} {'wall':>6s} {'CPU/notif':>9s}")
    with broker(args.mqtt) as url:
        for codec, phy in VARIANTS:
            c0 = cpu_s()
            run = run_ble_session(sim, MqttSettings.from_url(url), None, f"bench-{codec}-{phy}", speed=args.speed,
                                  bytes_per_s=PHY_BYTES_PER_S[phy], faults={"mic_codec": codec})
            cpu = cpu_s() - c0
            tp = sensor_throughput(run, args.seconds)
            need = sum(t.produced_bps for t in tp) / len(tp)
            got = [t.delivered_bps for t in tp]
            produced = sum(t.packets_produced for t in tp)
            drops = sum(t.tx_overflow for t in tp)
            received = sum(t.packets_received for t in tp)
            radio = run.radio_busy_s / args.seconds
            row = {"codec": codec, "phy": phy, "sensors": args.sensors, "seconds": args.seconds,
                   "need_bps": need, "budget_bps": BUDGET_BPS[codec], "delivered_bps": got,
                   "tx_drop_pct": 100.0 * drops / produced, "radio_pct": 100.0 * radio,
                   "packets_produced": produced, "packets_received": received, "wall_s": run.wall_s,
                   "cpu_ms_per_notification": 1e3 * cpu / max(1, received)}
            rows.append(row)
            print(f"{codec:9s} {phy:3s} {need / 1e3:8.2f} kB/s {BUDGET_BPS[codec] / 1e3:6.2f} "
                  f"{sum(got) / len(got) / 1e3:12.2f} ({min(got) / 1e3:5.2f}..{max(got) / 1e3:5.2f}) kB/s "
                  f"{100 * sum(got) / len(got) / need:6.1f}% {row['tx_drop_pct']:7.1f}% {100 * radio:5.0f}% "
                  f"{run.wall_s:5.1f}s {row['cpu_ms_per_notification']:6.2f} ms")
    print("\nneed: what a sensor samples and packs (payload + ATT header); budget: docs/protocol.md §2; "
          "radio: airtime used / session time")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
