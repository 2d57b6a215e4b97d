"""The ``jointmon`` command: demo, simulate, gateway, analyze, grade, checkin, eval, record, replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from analysis.session_report import add_report_parser
from jointmon import __version__
from jointmon.config import InfluxSettings, MqttSettings
from jointmon.errors import JointmonError

if TYPE_CHECKING:
    from analysis.athlete_history import AthleteHistory
    from analysis.grading import ReportArgs
    from analysis.offline import OfflineResult
    from jointmon.messages import JointGrade

log = logging.getLogger("jointmon")


def _add_influx_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("InfluxDB (token/password from JOINTMON_INFLUX_TOKEN / JOINTMON_INFLUX_PASSWORD)")
    g.add_argument("--influx", metavar="URL", help="also write results to InfluxDB at URL, e.g. http://127.0.0.1:8086")
    g.add_argument("--influx-api", choices=("v1", "v2"), default="v2",
                   help="write API: v2 (/api/v2/write, InfluxDB 2.x) or v1 (/write, InfluxDB 1.x) [%(default)s]")
    g.add_argument("--influx-db", default="jointmon", help="v1 database or v2 bucket [%(default)s]")
    g.add_argument("--influx-org", default="jointmon", help="v2 organisation [%(default)s]")
    g.add_argument("--influx-user", help="v1 user name (password from JOINTMON_INFLUX_PASSWORD)")
    g.add_argument("--influx-spool", metavar="DIR", help="keep unsent points on disk in DIR while InfluxDB is "
                   "unreachable and replay them in order when it is back [JOINTMON_INFLUX_SPOOL_DIR, else none: "
                   "retried in memory only]")


def _influx_settings(args: argparse.Namespace) -> InfluxSettings | None:
    if not args.influx:
        return None
    spool = {"spool_dir": args.influx_spool} if args.influx_spool else {}
    return InfluxSettings.from_env(url=args.influx, api=args.influx_api, database=args.influx_db,
                                   org=args.influx_org, username=args.influx_user, **spool)


def _add_partitions_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partitions", type=int, default=0, metavar="N",
                   help="publish each joint's frames under one of N partitions (jointmon/v1/data/p{n}/...) for "
                        "analysis workers sharing them (jointmon analyze --partitions N); 0: unpartitioned [0]")


def _add_sim_args(p: argparse.ArgumentParser, duration: float) -> None:
    p.add_argument("--duration", type=float, default=duration, metavar="S",
                   help="simulated session length, seconds [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="simulation seed: same seed, same session [%(default)s]")
    p.add_argument("--clicks", type=int, default=5, help="cavitation clicks to inject [%(default)s]")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true", help="stream as fast as possible instead of in real time")
    pace.add_argument("--speed", type=float, default=1.0, help="real-time multiple, e.g. 10 [%(default)s]")


def _port(text: str) -> int:
    """``--web-port``: a TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a port number 1-65535, or 0 for any free port") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port number 1-65535, or 0 for any free port")
    return value


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_demo(args: argparse.Namespace) -> int:
    from jointmon.demo import DemoOptions, DemoSummary, run_demo

    opts = DemoOptions(duration_s=args.duration, seed=args.seed, clicks=args.clicks, realtime=not args.fast,
                       speed=args.speed, mqtt_url=args.mqtt, influx=_influx_settings(args),
                       results_dir=Path(args.results), progress=not args.no_progress, broker=args.broker,
                       web_port=None if args.no_web else args.web_port)

    def after(summary: DemoSummary) -> None:
        print(summary.text(), flush=True)
        if args.keep_open and summary.web_url:
            print(f"live view still at {summary.web_url} (session over); Ctrl-C to quit", flush=True)
            _wait_for_ctrl_c()

    run_demo(opts, on_web_url=lambda url: print(f"live view: {url}", flush=True), after_session=after)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from firmware_sim.session import simulate_squat_session
    from jointmon.live_session import make_peripherals
    from sensor_gateway.gateway import Gateway, SensorBinding
    from sensor_gateway.mqtt_publisher import MqttPublisher
    from sensor_gateway.sim_link import SimLink

    sim = simulate_squat_session(args.duration, seed=args.seed, n_clicks=args.clicks, athlete=args.athlete,
                                 joint=args.joint)
    if args.virtual_ble or args.ble:
        return _simulate_ble(args, sim)
    publisher = MqttPublisher(MqttSettings.from_url(args.mqtt), args.gateway_id, partitions=args.partitions)
    publisher.start()
    peripherals = make_peripherals(sim, realtime=not args.fast, speed=args.speed)
    gateway = Gateway(publisher, [SensorBinding(SimLink(p), sim.athlete, sim.joint, n) for n, p in peripherals.items()])
    log.info("streaming %.0f s of simulated squats for %s/%s to %s", args.duration, sim.athlete, sim.joint, args.mqtt)
    try:
        asyncio.run(gateway.run())
        publisher.wait_acked()
    finally:
        publisher.stop()
    counters = dict(gateway.counters + gateway.stream_counters())
    print(f"published {publisher.counters['samples_published']:,} samples in "
          f"{publisher.counters['frames_published']:,} frames; gateway counters {counters}")
    for lb in sim.labels:
        print(f"label {lb.type} {lb.joint} t={lb.t_start_s:.4f} s magnitude={lb.magnitude:.1f} dB")
    return 0


def _simulate_ble(args: argparse.Namespace, sim: Any) -> int:
    """``simulate --virtual-ble`` / ``--ble SEGMENT=HCI``: the sensors as Bluetooth LE peripherals (Bumble); a
    gateway (``jointmon gateway``) connects to them and publishes."""
    from firmware_sim.bumble_virtual import (
        PHY_BYTES_PER_S,
        gateway_config_toml,
        run_hci_ble_sensors,
        run_virtual_ble_sensors,
    )

    if args.fast:
        raise JointmonError("--fast has no meaning over Bluetooth (the radio runs in time): use --speed")
    specs: dict[str, str] = {}
    for item in args.ble or ():
        segment, sep, spec = item.partition("=")
        if not sep or segment not in sim.sensors:
            raise JointmonError(f"--ble {item!r}: want SEGMENT=HCI with SEGMENT one of {sorted(sim.sensors)}")
        specs[segment] = spec

    def ready(sensors: dict[str, Any]) -> None:
        for segment, s in sensors.items():
            print(f"advertising {s.name} ({s.device.random_address}): {sim.athlete} {sim.joint} {segment}")
        if args.write_config:
            Path(args.write_config).write_text(gateway_config_toml(sensors, sim, gateway_id=args.gateway_id,
                                                                   mqtt_url=args.mqtt))
            print(f"gateway config written to {args.write_config}")
        if args.virtual_ble:
            hci = args.hci.replace("tcp-server:", "tcp-client:", 1)
            print(f"waiting for a gateway: jointmon gateway --backend bumble --hci {hci} "
                  f"--config {args.write_config or 'FILE'}", flush=True)

    if specs:
        run = asyncio.run(run_hci_ble_sensors(sim, specs, speed=args.speed, on_ready=ready))
    else:
        run = asyncio.run(run_virtual_ble_sensors(sim, hci_spec=args.hci, speed=args.speed,
                                                  bytes_per_s=PHY_BYTES_PER_S.get(args.phy), on_ready=ready))
    for name, counters in run.counters.items():
        lost = {k: v for k, v in run.lost[name].items() if v and not k.endswith("_status")}
        print(f"{name}: {counters.get('notified_imu', 0):,} IMU + {counters.get('notified_mic', 0):,} mic packets "
              f"notified, {counters.get('connections', 0)} connection(s); not delivered: {lost or 'none'}")
    for lb in sim.labels:
        print(f"label {lb.type} {lb.joint} t={lb.t_start_s:.4f} s magnitude={lb.magnitude:.1f} dB")
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from sensor_gateway.bleak_link import run_ble_gateway, scan_sensors
    from sensor_gateway.config import load_gateway_config

    cfg = load_gateway_config(args.config) if args.config else None  # first: a bad config fails before a scan
    if args.scan:
        from sensor_gateway.scanner import format_scan

        if args.backend == "bumble":
            from sensor_gateway.bumble_backend import scan_bumble

            ads = asyncio.run(scan_bumble(args.hci, args.scan_timeout))
        else:
            ads = asyncio.run(scan_sensors(args.scan_timeout))
        print(format_scan(ads, cfg.find if cfg is not None else None))
        return 0
    if cfg is None:
        raise JointmonError("gateway needs --config FILE (see docs/gateway.example.toml) or --scan")
    from sensor_gateway.mqtt_publisher import MqttPublisher

    publisher = MqttPublisher(cfg.mqtt, cfg.gateway_id, queue_path=cfg.queue_path, queue_max_bytes=cfg.queue.max_bytes,
                              partitions=args.partitions)
    publisher.start(require_broker=False)  # a broker away at start: frames wait in the disk queue
    try:
        if args.backend == "bumble":
            from sensor_gateway.bumble_backend import run_bumble_gateway

            asyncio.run(run_bumble_gateway(cfg, publisher, args.hci))
        else:
            asyncio.run(run_ble_gateway(cfg, publisher))
    finally:
        publisher.stop()
    return 0


def _pain(text: str) -> int:
    """``--pain``: a whole number on the 0..10 numeric rating scale."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: pain is a whole number from 0 (none) to 10 (worst)") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: pain is a whole number from 0 (none) to 10 (worst)")
    return value


def _yes_no(text: str) -> bool:
    """``--swelling`` / ``--injury``: yes or no (alone, the flag means yes)."""
    value = text.strip().lower()
    if value in ("yes", "y", "true", "1"):
        return True
    if value in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: yes or no")


def _add_report_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"self-report ({what}; red flags no sensor can measure)")
    g.add_argument("--pain", type=_pain, metavar="0-10", help="pain during or after the session, 0 (none) to 10")
    g.add_argument("--swelling", type=_yes_no, nargs="?", const=True, metavar="yes|no",
                   help="visible puffiness or warmth of the joint (alone: yes)")
    g.add_argument("--injury", type=_yes_no, nargs="?", const=True, metavar="yes|no",
                   help="the clicking started after an injury (alone: yes)")


def _add_grade_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("red-flag grading (benign / watch / seek evaluation; never a diagnosis)")
    g.add_argument("--history", default="results/athlete_history.sqlite", metavar="FILE",
                   help="per-athlete/joint session history: trends are judged against it and graded sessions "
                        "are added to it [%(default)s]")
    g.add_argument("--no-history", action="store_true", help="grade this session alone: no trend, nothing recorded")
    g.add_argument("--grade-json", metavar="FILE", help="also write the grades as JSON lines here")


def _history(args: argparse.Namespace) -> AthleteHistory | None:
    if args.no_history:
        return None
    from analysis.athlete_history import AthleteHistory

    return AthleteHistory(args.history)


def _emit_grades(args: argparse.Namespace, grades: list[JointGrade], file: TextIO) -> None:
    from analysis.grading import print_grades

    print_grades(grades, file)
    if args.grade_json:
        Path(args.grade_json).parent.mkdir(parents=True, exist_ok=True)
        with Path(args.grade_json).open("w", encoding="utf-8") as f:
            for g in grades:
                f.write(g.to_json().decode() + "\n")


def _report_args(args: argparse.Namespace, joint: str | None = None, athlete: str | None = None) -> ReportArgs:
    from analysis.grading import ReportArgs

    return ReportArgs(args.pain, args.swelling, args.injury, joint, athlete)


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.path:  # offline: a session folder or a recording, events as JSON lines
        from analysis.offline import run_offline

        if args.no_grade:
            return run_offline(args.path, args.out)
        from analysis.grading import grade_sessions, sessions_from_offline

        def grade(result: OfflineResult) -> None:
            history = _history(args)
            try:
                grades = grade_sessions(sessions_from_offline(result), _report_args(args, args.report_joint),
                                        history, now_ns=time.time_ns())
            finally:
                if history is not None:
                    history.close()
            _emit_grades(args, grades, sys.stderr)

        return run_offline(args.path, args.out, on_result=grade)
    if args.pain is not None or args.swelling is not None or args.injury is not None:
        raise JointmonError("--pain/--swelling/--injury grade an offline PATH; for a live session publish them "
                            "with `jointmon checkin` (or the live view's check-in, --web-port)")
    from analysis.mqtt_service import AnalysisService
    from analysis.result_sink import FanOut, ResultSink
    from analysis.results_store import SqliteResults

    mqtt = MqttSettings.from_url(args.mqtt)
    web = None
    if args.web_port is not None:  # first: a busy port fails before anything is opened
        from analysis.web_view import WEB_GRADE_INTERVAL_S, WebView

        web = WebView(args.session, mqtt, port=args.web_port, expect_grades=not args.no_grade).start()
    sinks: list[ResultSink] = [SqliteResults(args.results)]
    influx = _influx_settings(args)
    if influx is not None:
        from analysis.influx_sink import InfluxSink

        sinks.append(InfluxSink(influx))
    if web is not None:
        sinks.append(web)
    # with the live view, interim grades every few seconds show a check-in's effect while the session runs
    grade_interval = args.grade_interval or (WEB_GRADE_INTERVAL_S if web is not None and not args.no_grade else None)
    history = None if args.no_grade else _history(args)
    service = AnalysisService(mqtt, FanOut(*sinks), args.session, args.worker_id,
                              history=history, grade_interval_s=grade_interval, subscribe_streams=not args.partitions)
    partitioned = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        service.start()
        if args.partitions:
            from analysis.partitions import PartitionedWorker, PartitionSettings

            partitioned = PartitionedWorker(service, mqtt, PartitionSettings(args.partitions, args.group)).start()
    except BaseException:
        if web is not None:
            web.shutdown()
        raise
    if web is not None:
        print(f"live view: {web.url}", flush=True)
    log.info("analysing session %s; results in %s%s; Ctrl-C to stop", args.session, args.results,
             f" and {influx.url}" if influx else "")
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    try:
        while not stop.wait(1.0) and time.monotonic() < deadline:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if partitioned is not None:
            partitioned.stop()  # the partitions' sessions stay on the broker for the other workers
        service.stop()
        if web is not None:
            web.shutdown()
        if history is not None:
            history.close()
    print(f"analysed {sum(service.samples.values()):,} samples; counters {dict(service.counters)}")
    if not args.no_grade:
        _emit_grades(args, [g for g in service.grades if g.final], sys.stdout)
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from analysis.grading import grade_sessions, sessions_from_file

    sessions = sessions_from_file(args.file, args.duration)
    if args.athlete or args.joint:
        sessions = [s for s in sessions if (not args.athlete or s.key[0] == args.athlete)
                    and (not args.joint or s.key[1] == args.joint)]
    if not sessions:
        raise JointmonError(f"{args.file}: no events or sessions to grade" +
                            (" for that athlete/joint" if args.athlete or args.joint else ""))
    history = _history(args)
    try:
        grades = grade_sessions(sessions, _report_args(args, args.joint, args.athlete), history,
                                now_ns=time.time_ns())
    finally:
        if history is not None:
            history.close()
    if any(g.figures.get("duration_estimated") for g in grades):
        print("note: session length estimated from the last event (give --duration S for exact rates)",
              file=sys.stderr)
    _emit_grades(args, grades, sys.stdout)
    return 0


def cmd_checkin(args: argparse.Namespace) -> int:
    from jointmon.const import MQTT_QOS
    from jointmon.messages import SelfReport
    from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
    from jointmon.topics import reports_topic

    if args.pain is None and args.swelling is None and args.injury is None:
        raise JointmonError("nothing to report: give --pain 0-10, --swelling [yes|no] and/or --injury [yes|no]")
    report = SelfReport(args.athlete, args.joint, args.session, time.time_ns(), args.pain, args.swelling,
                        args.injury, args.source)
    topic = reports_topic(args.athlete, args.joint)
    settings = MqttSettings.from_url(args.mqtt)
    client = make_client(settings, f"jointmon-report-{time.time_ns() % 10**9}")
    connect(client, settings, ConnectionWaiter(client, "checkin"))
    try:
        info = client.publish(topic, report.to_json(), qos=MQTT_QOS)
        info.wait_for_publish(timeout=10.0)
        if not info.is_published():
            raise JointmonError(f"the broker at {args.mqtt} did not acknowledge the report within 10 s")
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"reported {report.to_json().decode()} on {topic}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from sensor_gateway.recorder import record_simulated_session

    if args.scenario:
        if args.duration is not None or args.seed is not None:
            raise JointmonError("--scenario FILE holds the session's duration and seed: drop --duration/--seed")
        from firmware_sim.scenario import load_scenario
        from firmware_sim.session import simulate_session

        sim = simulate_session(load_scenario(args.scenario))
    else:
        from firmware_sim.session import simulate_squat_session

        sim = simulate_squat_session(20.0 if args.duration is None else args.duration,
                                     seed=0 if args.seed is None else args.seed, n_clicks=args.clicks)
    publisher = None
    if args.mqtt:
        from sensor_gateway.mqtt_publisher import MqttPublisher

        publisher = MqttPublisher(MqttSettings.from_url(args.mqtt), args.gateway_id)
        publisher.start()
    meta = {"scenario": str(args.scenario)} if args.scenario else None
    from tqdm import tqdm

    with tqdm(total=float(sim.duration_s), unit="s", disable=args.no_progress or args.fast, leave=False,
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]") as bar:
        try:
            summary = record_simulated_session(sim, args.out, publisher=publisher, realtime=not args.fast,
                                               speed=args.speed, gateway_id=args.gateway_id, meta=meta,
                                               on_progress=lambda t: bar.update(t - bar.n))
            if publisher is not None:
                publisher.wait_acked()
        finally:
            if publisher is not None:
                publisher.stop()
    print(f"recorded {summary.packets:,} notifications ({sim.duration_s:g} s, {len(sim.labels)} labels) to "
          f"{summary.path}; {summary.samples_published:,} samples in {summary.frames_published:,} frames"
          f"{' published to ' + args.mqtt if args.mqtt else ''}; gateway counters {summary.gateway_counters}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from analysis.evaluation import dataset_sessions, evaluate_dataset, parse_tolerances, write_json

    tolerance = parse_tolerances(args.tolerance or [])
    n = len(dataset_sessions(args.dataset))
    with tqdm(total=n, unit="session", desc="eval", disable=args.no_progress, leave=False) as bar:
        evaluation = evaluate_dataset(args.dataset, tolerance_s=tolerance, jobs=args.jobs,
                                      on_session=lambda _: bar.update(1))
    print(evaluation.table())
    if args.json == "-":
        print(json.dumps(evaluation.as_dict(), indent=1))
    else:
        write_json(evaluation, args.json)
        print(f"\nJSON (totals and per session): {args.json}")
    return 0


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a real-time multiple (1, 10, ...) or 'max'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from firmware_sim.replay import replay_recording
    from jointmon.recording import read_recording
    from sensor_gateway.mqtt_publisher import MqttPublisher

    recording = read_recording(args.file)
    publisher = MqttPublisher(MqttSettings.from_url(args.mqtt), args.gateway_id, partitions=args.partitions)
    publisher.start()
    with tqdm(total=round(recording.duration_s, 1), unit="s", disable=args.no_progress, leave=False,
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]") as bar:
        try:
            result = replay_recording(recording, publisher, speed=args.speed,
                                      on_progress=lambda t: bar.update(round(t, 1) - bar.n))
            publisher.wait_acked()
        finally:
            publisher.stop()
    print(f"replayed {result.records_delivered:,} notifications of {args.file} ({recording.duration_s:.1f} s) in "
          f"{result.wall_s:.1f} s, times shifted by {result.offset_ns / 1e9:+.0f} s; "
          f"{publisher.counters['samples_published']:,} samples in {publisher.counters['frames_published']:,} "
          f"frames to {args.mqtt}; gateway counters {result.gateway_counters}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jointmon", description=(
        "Real-time joint monitoring: BLE knee/shoulder sensors -> gateway -> MQTT -> analysis -> InfluxDB."))
    parser.add_argument("--version", action="version", version=f"jointmon {__version__}")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log verbosity [%(default)s]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="live demo on simulated knee sensors (embedded broker; nothing to install)",
                       description="Simulated thigh + shank sensors doing squats -> gateway -> MQTT -> analysis -> "
                                   "results file, with live progress and a summary of found vs simulated events.")
    _add_sim_args(p, 20.0)
    p.add_argument("--mqtt", metavar="URL", help="use this broker instead of an embedded one, e.g. mqtt://host:1883")
    p.add_argument("--broker", choices=("mosquitto", "amqtt"), default="mosquitto",
                   help="embedded broker: mosquitto if installed (falls back to amqtt), or amqtt [%(default)s]")
    p.add_argument("--results", default="results", metavar="DIR", help="where the results file goes [%(default)s]")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    web = p.add_argument_group("live web view (charts, click timeline, alerts, grades, check-in)")
    web_port = web.add_mutually_exclusive_group()
    web_port.add_argument("--web-port", type=_port, default=8787, metavar="N",
                          help="serve it on http://127.0.0.1:N/ (0: any free port) [%(default)s]")
    web_port.add_argument("--no-web", action="store_true", help="no live web view")
    web.add_argument("--keep-open", action="store_true",
                     help="after the session, keep the live view up until Ctrl-C")
    _add_influx_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="stream simulated sensors through the gateway into an MQTT broker",
                       description="Simulated knee sensors streamed through the gateway (decode, clock map, frames) "
                                   "to a broker; prints the ground-truth labels.")
    _add_sim_args(p, 60.0)
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker [%(default)s]")
    p.add_argument("--athlete", default="ath-001", help="athlete pseudonym (never a name) [%(default)s]")
    p.add_argument("--joint", default="left_knee", help="joint id [%(default)s]")
    p.add_argument("--gateway-id", default="gw-sim", help="gateway id on the status topic [%(default)s]")
    _add_partitions_arg(p)
    ble = p.add_argument_group("Bluetooth LE (Bumble): the sensors become BLE peripherals; `jointmon gateway` "
                                "connects to them and publishes to --mqtt")
    ble.add_argument("--virtual-ble", action="store_true",
                     help="advertise on a virtual radio whose gateway controller is served as HCI on --hci")
    ble.add_argument("--hci", default="tcp-server:127.0.0.1:9601", metavar="SPEC",
                     help="--virtual-ble: where the gateway's controller is served [%(default)s]")
    ble.add_argument("--phy", choices=("1m", "2m", "unlimited"), default="2m",
                     help="--virtual-ble: the radio's airtime, 1M PHY ~97 kB/s, 2M PHY ~175 kB/s [%(default)s]")
    ble.add_argument("--ble", action="append", metavar="SEGMENT=HCI",
                     help="a real controller per sensor, e.g. thigh=usb:0 shank=usb:1 (Bumble transports)")
    ble.add_argument("--write-config", metavar="FILE", help="write a gateway config (TOML) for these sensors")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("gateway", help="connect to real BLE sensors (bleak) and publish to MQTT",
                       description="Scan for or connect to jointmon sensors over Bluetooth LE and publish their "
                                   "streams to MQTT.")
    p.add_argument("--config", metavar="FILE", help="gateway TOML (see docs/gateway.example.toml)")
    p.add_argument("--scan", action="store_true",
                   help="list advertising jointmon sensors (RSSI, battery; with --config: configured or unknown)")
    p.add_argument("--scan-timeout", type=float, default=10.0, metavar="S", help="scan time [%(default)s]")
    p.add_argument("--backend", choices=("bleak", "bumble"), default="bleak",
                   help="bleak: the OS Bluetooth stack (BlueZ); bumble: Bumble's host stack on the controller "
                        "at --hci (a USB dongle, a serial HCI board, a virtual radio) [%(default)s]")
    p.add_argument("--hci", default="tcp-client:127.0.0.1:9601", metavar="SPEC",
                   help="--backend bumble: HCI transport, e.g. usb:0, serial:/dev/ttyACM0,1000000, "
                        "tcp-client:HOST:PORT (jointmon simulate --virtual-ble) [%(default)s]")
    _add_partitions_arg(p)
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("analyze", help="subscribe to sensor streams and detect clicks, angles and reps",
                       description="Analysis service: subscribes to jointmon/v1/data/#, writes results to a SQLite "
                                   "file (and InfluxDB with --influx), publishes events on jointmon/v1/events/. "
                                   "With PATH: analyse a session folder (docs/session-folder.md) or a .jmrec "
                                   "recording offline and write the events as JSON lines.")
    p.add_argument("path", nargs="?", metavar="PATH", help="offline: session folder or .jmrec recording")
    p.add_argument("--out", metavar="FILE.jsonl", help="offline: write the JSON lines here [stdout]")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker [%(default)s]")
    p.add_argument("--session", default=time.strftime("%Y-%m-%d"), help="session id tag [today's date]")
    p.add_argument("--worker-id", default="analysis-1", help="id on the status topic [%(default)s]")
    p.add_argument("--results", default="results/analysis.sqlite", metavar="FILE", help="results file [%(default)s]")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: run until "
                   "Ctrl-C) [%(default)s]")
    g = p.add_argument_group("scale-out (several workers share the streams; docs/scaling.md)")
    g.add_argument("--partitions", type=int, default=0, metavar="N",
                   help="live: take a share of N partitions (the gateways' --partitions) with the other workers of "
                        "--group, one persistent MQTT 5 session per partition; 0: subscribe to every stream [0]")
    g.add_argument("--group", default="analysis", help="--partitions: the workers sharing them [%(default)s]")
    _add_influx_args(p)
    _add_report_args(p, "offline PATH only")
    _add_grade_args(p)
    p.add_argument("--report-joint", metavar="JOINT", help="offline: the self-report is about this joint [every "
                   "joint in PATH]")
    p.add_argument("--no-grade", action="store_true", help="no red-flag grade")
    p.add_argument("--grade-interval", type=float, default=0.0, metavar="S", help="live: also publish an interim "
                   "grade every S seconds (0: only at the end, or every few seconds with --web-port) [%(default)s]")
    p.add_argument("--web-port", type=_port, metavar="N", help="live: serve the live web view (angle charts, click "
                   "timeline, alerts, grades, athlete check-in) on http://127.0.0.1:N/, e.g. 8787 (0: any free "
                   "port) [off]")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("grade", help="red-flag grade per joint and session from an events or results file",
                       description="Grades each joint of each session in FILE (JSON lines from `jointmon analyze "
                                   "PATH --out FILE`, or a results file such as results/analysis.sqlite) as benign, "
                                   "watch or seek evaluation, with the reasons in plain words, against the "
                                   "athlete's session history. It measures and grades; it never diagnoses.")
    p.add_argument("file", metavar="FILE", help="events (.jsonl) or results (.sqlite) file")
    p.add_argument("--athlete", help="only this athlete (pseudonym); the self-report applies to it")
    p.add_argument("--joint", help="only this joint, e.g. left_knee; the self-report applies to it")
    p.add_argument("--duration", type=float, metavar="S", help="session length, s, for click rates [a results "
                   "file's angle span; else estimated from the events]")
    _add_report_args(p, "applies to every graded joint unless --athlete/--joint narrow it")
    _add_grade_args(p)
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("checkin", help="publish a check-in (self-report: pain, swelling, injury) for a joint "
                                       "over MQTT",
                       description="Publishes the athlete's or coach's self-report for one joint and session on "
                                   "jointmon/v1/reports/{athlete}/{joint}; the analysis service grades the session "
                                   "with it (pain and swelling are red flags no sensor can measure). The live web "
                                   "view's check-in form publishes the same.")
    p.add_argument("--athlete", required=True, help="athlete pseudonym, e.g. ath-001 (never a name)")
    p.add_argument("--joint", required=True, help="joint, e.g. left_knee")
    p.add_argument("--session", default=time.strftime("%Y-%m-%d"), help="session id tag [today's date]")
    p.add_argument("--source", choices=("athlete", "coach", "therapist"), default="athlete",
                   help="who reports [%(default)s]")
    _add_report_args(p, "at least one")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker [%(default)s]")
    p.set_defaults(func=cmd_checkin)

    p = sub.add_parser("eval", help="score the analysis on labelled sessions: precision/recall/F1, timing, "
                                    "sound confusion, angle RMSE",
                       description="Runs the offline analysis over DATASET (a .jmrec recording, a session folder "
                                   "with labels.csv, or a folder of them, e.g. bench/data/standard from `make "
                                   "standard-set`) and prints per event type precision, recall and F1 within a time "
                                   "tolerance, timing error, click/snap/crepitus confusion and the RMSE of the knee "
                                   "angles against the truth; the same as JSON.")
    p.add_argument("dataset", metavar="DATASET", help="recording, session folder, or a folder of them")
    p.add_argument("--json", default="results/eval.json", metavar="FILE", help="JSON output, - for stdout "
                   "[%(default)s]")
    p.add_argument("--tolerance", action="append", metavar="TYPE=MS", help="matching tolerance of an event type in "
                   "ms, e.g. click=10 (repeatable) [click/snap/crepitus 20, valgus 500, instability 300, "
                   "locking 1000]")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes [min(4, CPUs)]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    add_report_parser(sub)  # jointmon report SESSION: HTML session report + PNG figures (docs/session-report.md)

    p = sub.add_parser("record", help="simulate a session, stream it through the gateway and record it losslessly",
                       description="Simulated sensors -> gateway (and an MQTT broker with --mqtt); every BLE "
                                   "notification is recorded with its arrival time, plus the sensors, labels and "
                                   "ground truth, in one file (docs/recording-format.md).")
    p.add_argument("out", metavar="OUT.jmrec", help="recording file to write")
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (holds duration, seed, link faults)")
    p.add_argument("--duration", type=float, metavar="S", help="simulated session length, seconds [20]")
    p.add_argument("--seed", type=int, help="simulation seed: same seed, same session [0]")
    p.add_argument("--clicks", type=int, default=5, help="cavitation clicks to inject [%(default)s]")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true", help="stream as fast as possible instead of in real time")
    pace.add_argument("--speed", type=float, default=1.0, help="real-time multiple, e.g. 10 [%(default)s]")
    p.add_argument("--mqtt", metavar="URL", help="also publish the frames to this broker, e.g. mqtt://host:1883")
    p.add_argument("--gateway-id", default="gw-sim", help="gateway id on the status topic [%(default)s]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="feed a recording through the gateway into an MQTT broker",
                       description="Replays a .jmrec recording through the gateway, bit for bit: the same frames "
                                   "as the live run, with times shifted to now by whole seconds.")
    p.add_argument("file", metavar="FILE.jmrec", help="recording to replay")
    p.add_argument("--speed", type=_speed, default=1.0, metavar="1|10|max",
                   help="real-time multiple, or max for as fast as possible [1]")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker [%(default)s]")
    p.add_argument("--gateway-id", default="gw-replay", help="gateway id on the status topic [%(default)s]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_partitions_arg(p)
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", 0) is None:
        from analysis.evaluation import default_jobs

        args.jobs = default_jobs()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except JointmonError as exc:
        print(f"jointmon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
