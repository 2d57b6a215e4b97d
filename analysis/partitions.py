"""Several analysis workers sharing the streams: partitions, one persistent MQTT session per partition.

A gateway with ``partitions = N`` publishes each joint's frames and gap records under
``jointmon/v1/{data,gaps}/p{n}/...`` with ``n = partition_of(athlete, joint, N)`` (:mod:`jointmon.topics`): every
sensor and stream of a joint share a partition, so the joint's state (orientation, calibration, detectors) lives
in one worker. The workers of a group divide the N partitions among themselves:

* **Membership**: each worker publishes a retained status on ``jointmon/v1/status/partition_worker/{worker_id}``
  (``info``: group, partition count, the partitions it holds) with a last will ``offline``, and follows the others'.
  A SIGKILLed worker's socket closes at once, so the broker sends its will at once (a lost network only after
  1.5 keep-alives).
* **Assignment**: rendezvous hashing (highest random weight) of (worker, partition) over the online members: every
  worker computes the same owner for each partition from the same member list, and a member leaving or joining
  moves only the partitions it held or takes (about N / members).
* **One persistent session per partition**: the owner of partition n connects with the client id
  ``jointmon-{group}-p{n}`` (MQTT 5, ``clean_start = false``, a session expiry) and holds the shared subscriptions
  ``$share/{group}/jointmon/v1/{data,gaps}/p{n}/#`` at QoS 1. The session, not the worker, owns the queue: while no
  worker holds it (a worker died, a handover) the broker keeps queuing the partition's frames in it, and the next
  owner connects with the same client id and gets them all, the ones the dead worker had received but not
  acknowledged included. Frames are acknowledged by hand, after the analysis processed them
  (:meth:`AnalysisService.submit` ``on_done``), so a killed worker loses none. A second connection with the same
  client id takes the session over and the broker disconnects the first (MQTT 5 reason 0x8E): one holder at a
  time, enforced by the broker even if two workers disagree for a moment.

  Why a session per partition and not one share group of worker sessions: Mosquitto (and EMQX by default) deal a
  share group's messages round robin to its members' *sessions*, connected or not (mosquitto#2662), so a killed
  worker's persistent session would keep collecting its share of every partition, stranded, and a joint's frames
  would be split between workers. The shared-subscription form still makes a partition's frames go to exactly
  one subscriber should two sessions ever hold it.

* **Re-warming**: the new owner starts the moved joints' pipelines from the first frame it receives (the stream's
  indices and times are kept, so stream time stays true); orientation and detectors warm up as at a session's
  start, and the sensor-to-segment calibration is redone from the next movement.

Delivery is at least once: a frame the old owner processed but had not yet acknowledged when it died (or released
the partition) is analysed again by the new owner. In steady state every frame is analysed exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from jointmon.config import MqttSettings
from jointmon.const import MQTT_QOS
from jointmon.errors import LinkError, MessageError, TopicError
from jointmon.messages import Status
from jointmon.mqtt_client import ConnectionWaiter, connect, make_client
from jointmon.topics import (
    MAX_PARTITIONS,
    STATUS_SUBSCRIPTION,
    check_level,
    data_partition_subscription,
    gaps_partition_subscription,
    shared_subscription,
    status_topic,
)

log = logging.getLogger("jointmon.analysis.partitions")

MEMBER_COMPONENT = "partition_worker"  # status topic component of the workers' membership status
_MEMBERS_PREFIX = STATUS_SUBSCRIPTION.removesuffix("#") + MEMBER_COMPONENT + "/"
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason code 0x8E: another connection took this client id's session


@dataclass(frozen=True)
class PartitionSettings:
    """``partitions``: N, the same on every gateway and worker; ``group``: the workers sharing them (one topic level);
    ``settle_s``: after joining, how long a worker waits to hear the members' retained statuses before it takes
    partitions (s); ``session_expiry_s``: how long the broker keeps an unheld partition's session and queue (s);
    ``retake_after_s``: a partition another connection took over is not taken back for this long (s), so two
    workers with different views of the group do not fight over it."""

    partitions: int = 16
    group: str = "analysis"
    settle_s: float = 1.0
    session_expiry_s: int = 24 * 3600
    retake_after_s: float = 5.0

    def __post_init__(self) -> None:
        check_level("group", self.group)
        if not 0 < self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions = {self.partitions}: must be 1..{MAX_PARTITIONS}")


def _weight(member: str, partition: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}|{partition}".encode(), digest_size=8).digest(), "little")


def assign(members: Iterable[str], partitions: int) -> dict[int, str]:
    """Rendezvous hashing: the owner of each partition among ``members`` (empty if there is no member)."""
    ms = sorted(set(members))
    if not ms:
        return {}
    return {p: max(ms, key=lambda m: (_weight(m, p), m)) for p in range(partitions)}


def partition_client_id(group: str, partition: int) -> str:
    """The MQTT client id of a partition's session (whoever holds it)."""
    return f"jointmon-{group}-p{partition}"


class PartitionSession:
    """One partition's persistent MQTT 5 session: shared subscriptions to its data and gaps, frames handed to
    ``submit(topic, payload, on_done)`` and acknowledged in ``on_done`` (after processing) while held.
    ``on_lost(partition)`` is called (paho's thread) if another connection takes the session over."""

    def __init__(self, settings: MqttSettings, group: str, partition: int,
                 submit: Callable[[str, bytes, Callable[[], None]], None], on_lost: Callable[[int], None],
                 session_expiry_s: int) -> None:
        self.partition = partition
        self.group = group
        self.settings = dataclasses.replace(settings, protocol=5, session_expiry_s=session_expiry_s)
        self.client = make_client(self.settings, partition_client_id(group, partition), clean_session=False)
        self.client.manual_ack_set(True)
        self._waiter = ConnectionWaiter(self.client, f"partition {partition}")
        self._waiter.on_connected = self._on_connected
        self._waiter_disconnect = self.client.on_disconnect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._submit = submit
        self._on_lost = on_lost
        self.held = False  # acknowledging: False after release() or a takeover
        self.received = 0

    def _on_connected(self, client: mqtt.Client) -> None:
        client.subscribe([(shared_subscription(self.group, data_partition_subscription(self.partition)), MQTT_QOS),
                          (shared_subscription(self.group, gaps_partition_subscription(self.partition)), MQTT_QOS)])

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        self._waiter_disconnect(client, userdata, flags, reason, properties)
        if getattr(reason, "value", 0) == SESSION_TAKEN_OVER and self.held:
            self.held = False
            log.warning("partition %d: session taken over by another connection", self.partition)
            client.disconnect()  # no reconnect: that would take it back, and the two would take turns
            self._on_lost(self.partition)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        mid, qos = msg.mid, msg.qos

        def ack() -> None:
            if self.held and qos:  # released: not acknowledged, so the partition's next holder gets it again
                try:
                    self.client.ack(mid, qos)
                except Exception:  # noqa: BLE001 - a failed ack means a redelivery, never a lost frame
                    log.debug("partition %d: ack of %d failed", self.partition, mid)

        self._submit(msg.topic, msg.payload, ack)

    def hold(self) -> None:
        """Connect (resuming the partition's session and its queue); :class:`LinkError` if the broker does not
        answer."""
        self.held = True
        try:
            connect(self.client, self.settings, self._waiter)
        except LinkError:
            self.held = False
            raise

    def release(self) -> None:
        """Stop acknowledging, then disconnect normally: the session and its unacknowledged frames stay on the
        broker for the next holder."""
        self.held = False
        self.client.disconnect()
        self.client.loop_stop()


class PartitionedWorker:
    """Holds this worker's share of the partitions for an :class:`analysis.mqtt_service.AnalysisService` created
    with ``subscribe_streams=False``: membership, assignment, one :class:`PartitionSession` per held partition,
    and the router's ownership (frames of other partitions are dropped; released joints' pipelines finished).

    ``owned``: the partitions held now. ``on_change(owned)`` is called after each rebalance (tests, logs).
    """

    def __init__(self, service: object, mqtt_settings: MqttSettings, settings: PartitionSettings | None = None,
                 on_change: Callable[[frozenset[int]], None] | None = None) -> None:
        self.service = service
        self.router = service.router  # type: ignore[attr-defined]
        self.settings = settings or PartitionSettings()
        self.mqtt_settings = mqtt_settings
        self.worker_id: str = service.worker_id  # type: ignore[attr-defined]
        self.on_change = on_change
        self.members: set[str] = {self.worker_id}
        self.sessions: dict[int, PartitionSession] = {}  # held partitions (the rebalancing thread changes it)
        self._owned: frozenset[int] = frozenset()  # the same keys, for other threads
        self.lost_at: dict[int, float] = {}  # partition -> monotonic time another connection took it over
        self.counters = service.counters  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._joined = 0.0
        self.status_topic = status_topic(MEMBER_COMPONENT, self.worker_id)
        self.client = make_client(mqtt_settings, f"jointmon-{self.worker_id}-member", clean_session=True)
        will = Status(MEMBER_COMPONENT, self.worker_id, "offline", 0,
                      info={"group": self.settings.group, "partitions": self.settings.partitions, "owned": []})
        self.client.will_set(self.status_topic, will.to_json(), qos=MQTT_QOS, retain=True)
        self._waiter = ConnectionWaiter(self.client, f"partition worker {self.worker_id}")
        self._waiter.on_connected = self._on_connected
        self.client.on_message = self._on_member
        self._thread = threading.Thread(target=self._run, name=f"{self.worker_id}-partitions", daemon=True)
        self.router.set_ownership(self.settings.partitions, frozenset())  # nothing until assigned

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    # --- membership (paho's thread) ---
    def _on_connected(self, client: mqtt.Client) -> None:
        client.subscribe(_MEMBERS_PREFIX + "+", MQTT_QOS)
        self._publish_status("online")

    def _publish_status(self, state: str) -> None:
        info = {"group": self.settings.group, "partitions": self.settings.partitions, "owned": sorted(self.owned)}
        status = Status(MEMBER_COMPONENT, self.worker_id, state, time.time_ns(), counters={}, info=info)
        self.client.publish(self.status_topic, status.to_json(), qos=MQTT_QOS, retain=True)

    def _on_member(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            member = check_level("component_id", msg.topic.removeprefix(_MEMBERS_PREFIX))
            status = Status.from_json(msg.payload)
        except (TopicError, MessageError) as exc:
            self.counters["dropped_member_status_malformed"] += 1
            log.warning("malformed partition worker status on %s: %s", msg.topic, exc)
            return
        if member == self.worker_id:
            return
        if status.state != "online":  # offline, or the last will (a worker of any group: leaving is leaving)
            with self._lock:
                changed = member in self.members
                self.members.discard(member)
            if changed:
                log.info("group %s: %s left; members %s", self.settings.group, member, sorted(self.members))
                self._wake.set()
            return
        if status.info.get("group") != self.settings.group:
            return
        if status.info.get("partitions") != self.settings.partitions:
            log.error("worker %s of group %s uses %s partitions, this one %d: ignored (configure the same count)",
                      member, self.settings.group, status.info.get("partitions"), self.settings.partitions)
            return
        with self._lock:
            changed = member not in self.members
            self.members.add(member)
        if changed:
            log.info("group %s: %s joined; members %s", self.settings.group, member, sorted(self.members))
            self._wake.set()

    # --- rebalancing (own thread: connecting a session waits for the broker) ---
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)  # also periodically: retry partitions that failed or were taken over
            self._wake.clear()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._joined >= self.settings.settle_s:
                self.rebalance()
            else:
                self._stopping.wait(self.settings.settle_s - (time.monotonic() - self._joined))
                self._wake.set()

    def _on_lost(self, partition: int) -> None:
        self.lost_at[partition] = time.monotonic()
        self.counters["partitions_taken_over"] += 1
        self._wake.set()

    def rebalance(self) -> None:
        """Release the partitions no longer ours, take the new ones (this worker's view of the group)."""
        with self._lock:
            members = set(self.members)
        now = time.monotonic()
        want = {p for p, owner in assign(members, self.settings.partitions).items() if owner == self.worker_id
                and now - self.lost_at.get(p, -1e9) >= self.settings.retake_after_s}
        gone = {p for p, s in self.sessions.items() if not s.held}  # taken over by another connection
        release = (set(self.sessions) - want) | gone
        take = want - (set(self.sessions) - release)
        if not release and not take:
            return
        for p in sorted(release):
            self.sessions.pop(p).release()
            self.counters["partitions_released"] += 1
        self._owned = frozenset(self.sessions)
        # Ownership first without the released ones (their queued frames are dropped unacknowledged: the next
        # holder gets them), then with the new ones before their sessions deliver anything.
        self.router.set_ownership(self.settings.partitions, self.owned | take)
        for p in sorted(take):
            session = PartitionSession(self.mqtt_settings, self.settings.group, p,
                                       self.service.submit, self._on_lost,  # type: ignore[attr-defined]
                                       self.settings.session_expiry_s)
            try:
                session.hold()
            except LinkError as exc:
                log.warning("partition %d: %s; retried", p, exc)
                continue
            self.sessions[p] = session
            self.counters["partitions_taken"] += 1
        self._owned = frozenset(self.sessions)
        self.router.set_ownership(self.settings.partitions, self.owned)
        log.info("worker %s holds partitions %s of %d", self.worker_id, sorted(self.owned), self.settings.partitions)
        self._publish_status("online")
        if self.on_change is not None:
            self.on_change(self.owned)

    # --- lifecycle ---
    def start(self) -> PartitionedWorker:
        connect(self.client, self.mqtt_settings, self._waiter)
        self._joined = time.monotonic()
        self._thread.start()
        self._wake.set()
        return self

    def stop(self) -> None:
        """Release every partition (their sessions stay on the broker for the other workers), then leave.

        The router keeps its joints: the service's stop then analyses what is still queued (unacknowledged, so a
        worker taking the partition over analyses it again) and grades them, as at the end of a session."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(30)
        for p in sorted(self.sessions):
            self.sessions.pop(p).release()
        self._owned = frozenset()
        self._publish_status("offline")
        self.client.disconnect()
        self.client.loop_stop()
