"""Several analysis workers share the streams through partitions on a real Mosquitto (analysis/partitions.py).

Three worker processes (tests/scale_worker.py: the analysis service + PartitionedWorker, logging every frame they
analyse) divide 12 partitions; six knees stream, two per worker. Half-way one worker is SIGKILLed: its knees must
resume on another worker with no frame lost, the other knees must be analysed exactly once by their worker, and
the moved knees' angles must come back within a bounded time of sensor data.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from analysis.partitions import MEMBER_COMPONENT, assign
from firmware_sim.session import simulate_squat_session
from jointmon.frames import Frame, encode_frame
from jointmon.packets import StreamType, channel_scale
from jointmon.topics import STATUS_SUBSCRIPTION, DataTopic, partition_of

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 12
GROUP = "scale-test"
WORKERS = ("w1", "w2", "w3")
KNEES_PER_WORKER = 2
SECONDS = 12.0
T0_NS = 1_700_000_000_000_000_000
START_TIMEOUT_S = 40.0  # three processes importing numpy/scipy on a shared 2-core machine
DONE_TIMEOUT_S = 60.0
REWARM_MAX_S = 3.0  # sensor time from a moved knee's first frame on its new worker to its first angle there
RESUME_MAX_S = 10.0  # wall time from the SIGKILL to the first frame of a moved knee on its new worker
INFLIGHT_MAX = 100  # mosquitto's max_inflight_messages (tests/servers.py): the most a dead worker can leave unacked


def knees_per_worker() -> dict[str, list[str]]:
    """Athlete ids whose left knee lands on each worker (the assignment every worker computes), two each."""
    owner = assign(WORKERS, PARTITIONS)
    out: dict[str, list[str]] = {w: [] for w in WORKERS}
    i = 0
    while any(len(v) < KNEES_PER_WORKER for v in out.values()):
        athlete = f"ath-{i:03d}"
        w = owner[partition_of(athlete, "left_knee", PARTITIONS)]
        if len(out[w]) < KNEES_PER_WORKER:
            out[w].append(athlete)
        i += 1
    return out


def session_frames(athletes: list[str]) -> list[tuple[str, bytes, str, int]]:
    """(topic, payload, stream key, frame_seq) of every knee's simulated squats in 50 ms frames, in time order."""
    sim = simulate_squat_session(SECONDS, seed=5)
    out = []
    for athlete in athletes:
        for name, sig in sim.sensors.items():
            for stream, level, raw, rate, scale in (
                    (StreamType.IMU, "imu", sig.imu_raw, sig.imu_rate_hz, channel_scale(StreamType.IMU,
                                                                                        sig.imu_range_code)),
                    (StreamType.MIC_PCM16, "mic", sig.mic_raw.reshape(-1, 1), sig.mic_rate_hz,
                     channel_scale(StreamType.MIC_PCM16, 0))):
                topic = DataTopic(athlete, "left_knee", name, level).partitioned(PARTITIONS)
                n = round(0.05 * rate)
                for k, i in enumerate(range(0, raw.shape[0], n)):
                    frame = Frame(stream, k, i, T0_NS + round(i * 1e9 / rate), float(rate), scale, raw[i:i + n])
                    out.append((str(topic), encode_frame(frame), f"{athlete}/left_knee/{name}/{level}", k,
                                frame.t0_ns))
    out.sort(key=lambda r: (r[4], r[0]))
    return [r[:4] for r in out]


class Members:
    """Follows the workers' retained membership statuses: worker -> owned partitions (online only)."""

    def __init__(self, url_port: int) -> None:
        self.owned: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scale-test-members")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(STATUS_SUBSCRIPTION.removesuffix("#") + MEMBER_COMPONENT
                                                           + "/+", 1)
        self.client.connect("127.0.0.1", url_port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        status = json.loads(msg.payload)
        with self.lock:
            if status["state"] == "online" and status["info"].get("group") == GROUP:
                self.owned[status["component_id"]] = status["info"]["owned"]
            else:
                self.owned.pop(status["component_id"], None)

    def snapshot(self) -> dict[str, list[int]]:
        with self.lock:
            return dict(self.owned)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def read_log(path: Path) -> list[tuple[str, int, int, int]]:
    """(stream key, frame_seq, t0_ns, wall_ns) per logged frame; a half-written last line (SIGKILL) is skipped."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return out


def publish(client: mqtt.Client, rows: list[tuple[str, bytes, str, int]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload, _, _ in rows]
    for info in infos:
        info.wait_for_publish(30)


def test_partitioned_workers_share_streams_and_survive_a_killed_worker(mosquitto, tmp_path: Path) -> None:
    knees = knees_per_worker()
    rows = session_frames([a for w in WORKERS for a in knees[w]])
    victim, survivors = "w2", ("w1", "w3")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    members = Members(mosquitto.port)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scale-test-gateway")
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for w in WORKERS:
            with (tmp_path / f"{w}.out").open("wb") as out:
                procs[w] = subprocess.Popen([sys.executable, str(ROOT / "tests" / "scale_worker.py"), mosquitto.url,
                                             w, GROUP, str(PARTITIONS), str(tmp_path / f"{w}.sqlite"),
                                             str(tmp_path / f"{w}.log")], stdout=out, stderr=subprocess.STDOUT,
                                            cwd=ROOT)
        want = {w: sorted(p for p, o in assign(WORKERS, PARTITIONS).items() if o == w) for w in WORKERS}
        deadline = time.monotonic() + START_TIMEOUT_S
        while members.snapshot() != want:
            assert time.monotonic() < deadline, f"assignment not reached: {members.snapshot()} != {want}"
            assert all(p.poll() is None for p in procs.values()), "a worker exited"
            time.sleep(0.1)

        half = len(rows) // 2
        publish(pub, rows[:half])
        deadline = time.monotonic() + DONE_TIMEOUT_S
        while len(read_log(tmp_path / f"{victim}.log")) < 50:  # the victim is analysing: kill it mid-stream
            assert time.monotonic() < deadline, "the victim analyses nothing"
            time.sleep(0.02)
        killed_ns = time.time_ns()
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        publish(pub, rows[half:])

        published = {(key, seq) for _, _, key, seq in rows}
        logs: dict[str, list[tuple[str, int, int, int]]] = {}
        while True:
            logs = {w: read_log(tmp_path / f"{w}.log") for w in WORKERS}
            seen = {(k, s) for entries in logs.values() for k, s, _, _ in entries}
            if published <= seen:
                break
            assert time.monotonic() < deadline, f"{len(published - seen)} frame(s) never analysed"
            time.sleep(0.2)
        for w in survivors:
            procs[w].send_signal(signal.SIGTERM)
        for w in survivors:
            assert procs[w].wait(60) == 0, (tmp_path / f"{w}.out").read_text()[-2000:]
    finally:
        pub.loop_stop()
        members.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    by_stream: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # stream -> worker -> seqs
    for w, entries in logs.items():
        for key, seq, _, _ in entries:
            by_stream[key][w].append(seq)
    n_per_stream = {key: sum(1 for _, _, k, _ in rows if k == key) for key in by_stream}
    # Knees of the surviving workers: every frame analysed exactly once, by their worker only.
    for w in survivors:
        for athlete in knees[w]:
            for key in [k for k in by_stream if k.startswith(f"{athlete}/")]:
                assert set(by_stream[key]) == {w}, (key, {x: len(s) for x, s in by_stream[key].items()})
                assert sorted(by_stream[key][w]) == list(range(n_per_stream[key])), key
    # The victim's knees: analysed by it until the kill, then by exactly one survivor, nothing lost; frames the
    # victim analysed but had not acknowledged may be analysed again (at least once), never more than the window.
    for athlete in knees[victim]:
        keys = [k for k in by_stream if k.startswith(f"{athlete}/")]
        takers = {w for k in keys for w in by_stream[k] if w != victim}
        assert len(takers) == 1, (athlete, takers)
        taker = takers.pop()
        assert sum(len(by_stream[k][victim]) for k in keys) > 0, f"{athlete}: the victim analysed none of it"
        for key in keys:
            mine, theirs = by_stream[key][victim], by_stream[key][taker]
            assert sorted(set(mine) | set(theirs)) == list(range(n_per_stream[key])), f"{key}: frames lost"
            assert len(theirs) == len(set(theirs)), f"{key}: the taker analysed a frame twice"
            assert len(set(mine) & set(theirs)) <= INFLIGHT_MAX, key
            assert min(theirs) <= max(mine, default=-1) + 1, f"{key}: a hole between the two workers"
        # Resumed in bounded wall time after the kill, and the angles are back within bounded sensor time.
        taken = [(t0, wall) for k, _, t0, wall in logs[taker] if k.startswith(f"{athlete}/")]
        first_t0, first_wall = min(taken)[0], min(wall for _, wall in taken)
        assert (first_wall - killed_ns) / 1e9 <= RESUME_MAX_S
        with sqlite3.connect(tmp_path / f"{taker}.sqlite") as db:
            (first_angle,) = db.execute("SELECT min(t_ns) FROM joint_angle WHERE athlete = ? AND t_ns >= ? AND "
                                        "flexion_deg IS NOT NULL", (athlete, first_t0)).fetchone()
        assert first_angle is not None, f"{athlete}: no angles from the new worker"
        dups = sum(len(set(by_stream[k][victim]) & set(by_stream[k][taker])) for k in keys)
        print(f"{athlete}: {victim} -> {taker}: resumed {(first_wall - killed_ns) / 1e9:.2f} s after the kill, "
              f"angles back {(first_angle - first_t0) / 1e9:.2f} s (sensor time) after its first frame there, "
              f"{dups} frame(s) analysed twice")
        assert (first_angle - first_t0) / 1e9 <= REWARM_MAX_S, (athlete, (first_angle - first_t0) / 1e9)


@pytest.mark.parametrize("members", [("a",), ("a", "b"), ("a", "b", "c")])
def test_assignment_moves_only_the_leavers_partitions(members: tuple[str, ...]) -> None:
    before = assign(members + ("x",), 64)
    after = assign(members, 64)
    assert set(before) == set(after) == set(range(64))
    moved = {p for p in before if before[p] != after[p]}
    assert moved == {p for p, o in before.items() if o == "x"}  # only the leaver's partitions move
    share = [sum(1 for o in after.values() if o == m) for m in members]
    assert min(share) >= 64 / len(members) / 2  # no member starves (rendezvous hashing spreads them)


def test_partition_is_per_joint_and_stable() -> None:
    assert partition_of("ath-7f3c", "left_knee", 16) == partition_of("ath-7f3c", "left_knee", 16)
    topics = {DataTopic("ath-7f3c", "left_knee", s, st).partitioned(16).partition
              for s in ("thigh", "shank") for st in ("imu", "mic")}
    assert len(topics) == 1  # every sensor and stream of the joint: one partition, one worker
    assert str(DataTopic("a", "left_knee", "thigh", "imu", 3)) == "jointmon/v1/data/p3/a/left_knee/thigh/imu"
    code = "from jointmon.topics import partition_of; print(partition_of('ath-7f3c', 'left_knee', 16))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert int(other.stdout) == partition_of("ath-7f3c", "left_knee", 16)  # the same in every process
