"""One analysis worker of a partitioned group, as a process, for tests/test_scale_out.py.

    python tests/scale_worker.py URL WORKER_ID GROUP PARTITIONS RESULTS.sqlite FRAMES.log

The analysis service (results to a SQLite file) with a :class:`analysis.partitions.PartitionedWorker`; every frame
the router accepts is logged as ``stream_key frame_seq t0_ns wall_ns`` (one unbuffered write each, so a SIGKILL loses
none that was processed) until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.mqtt_service import AnalysisService  # noqa: E402
from analysis.partitions import PartitionedWorker, PartitionSettings  # noqa: E402
from analysis.results_store import SqliteResults  # noqa: E402
from jointmon.config import MqttSettings  # noqa: E402
from jointmon.frames import Frame  # noqa: E402
from jointmon.topics import DataTopic  # noqa: E402


def main() -> int:
    url, worker_id, group, partitions, results, frame_log = sys.argv[1:7]
    settings = MqttSettings.from_url(url)
    service = AnalysisService(settings, SqliteResults(results), "scale-test", worker_id, subscribe_streams=False)
    fd = os.open(frame_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    route = service.router.route

    def logged(t: DataTopic, frame: Frame) -> bool:
        ok = route(t, frame)
        if ok:
            os.write(fd, f"{t.athlete}/{t.joint}/{t.sensor}/{t.stream} {frame.frame_seq} {frame.t0_ns} "
                         f"{time.time_ns()}\n".encode())
        return ok

    service.router.route = logged  # type: ignore[method-assign]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    worker = PartitionedWorker(service, settings, PartitionSettings(int(partitions), group, settle_s=0.5)).start()
    stop.wait()
    worker.stop()
    service.stop()
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
