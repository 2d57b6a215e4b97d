"""Joint-sound onset detection side by side: jointmon's detector vs librosa and aubio onset detectors.

    python bench/sound_peers.py [--sessions 8] [--duration 30] [--seed 500]

Benchmark audio: the reference microphone (shank / upper arm) of ``--sessions`` simulated sessions drawn like
the standard set (``bench/standard_set.py``: exercises, athletes, SNR 0-26 dB, rubbing, impacts), from seeds
``--seed ..``, with the simulator's labels (clicks, snaps, crepitus trains). Every detector gets the same
samples (float, full scale, 16 kHz) and is scored the same way: onset detection F1 at 20 ms against all sound
labels (a crepitus label spans its train: one detection inside it matches), and time per minute of audio.

Rows: ``jointmon (mic only)`` runs the transient detector + sound tracker on that one microphone, without
the IMU or the joint angle (the peers' input); ``jointmon (2 mics + IMU)`` adds the other microphone and the
accelerometers (impact veto), still without joint angles. ``jointmon detector only`` times the stage that does
what an onset detector does: the transient detector's whole streaming path (50 ms blocks in, candidates out,
both spectrograms, CFAR whitening, peak picking, ``flush()`` at the end) on the same microphone; time only (its
candidates are not events yet: tens per labelled sound, no F1). Peers at library defaults or their documented
values (``bench/README.md``), not tuned here: librosa on the whole signal at once (its API), aubio streaming, one
``onset()`` call per 256-sample hop (its API's unit; the same samples as our 50 ms blocks, its own Python call
per hop included, as our per-block calls are).

Time: wall clock and CPU time of this process (``time.process_time``: on a loaded host the wall clock also
counts the time other processes hold the cores; CPU time is the steadier figure), both per minute of audio,
steady state (every detector warmed up once first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.event_matching import match_events  # noqa: E402 - after the path set-up
from analysis.sound_events import SoundTracker  # noqa: E402
from analysis.transient_detector import TransientDetector  # noqa: E402

SOUND_TYPES = ("click", "snap", "crepitus")
TOLERANCE_S = 0.020
BLOCK = 800  # 50 ms blocks, as the live service gets them
TIME_ONLY = {"jointmon detector only"}  # candidates, not events: timed, not scored


def simulate(k: int, duration_s: float) -> dict:
    """Session ``k`` (standard-set recipe): mics (FS) and accelerometers (g) per sensor, sound labels."""
    sys.path.insert(0, str(REPO / "bench"))
    from standard_set import _rounded, scenario_for

    from firmware_sim.scenario import scenario_from_dict
    from firmware_sim.session import simulate_session

    sim = simulate_session(scenario_from_dict(_rounded(scenario_for(k, duration_s)), source=f"peer session {k}"))
    names = list(sim.sensors)
    ref = next((n for n in ("shank", "upper_arm") if n in names), names[0])
    return {"ref": ref, "rate": sim.sensors[ref].mic_rate_hz,
            "mics": {n: s.mic_fs().astype(float) for n, s in sim.sensors.items()},
            "acc": {n: (s.accel_g(), s.imu_rate_hz) for n, s in sim.sensors.items()},
            "labels": [(lb.t_start_s, lb.t_end_s) for lb in sim.labels if lb.type in SOUND_TYPES]}


def jointmon_detect(sess: dict, use_imu: bool) -> np.ndarray:
    """Onset times (s) from jointmon's detector + tracker, fed in 50 ms blocks."""
    rate = sess["rate"]
    mics = sess["mics"] if use_imu else {sess["ref"]: sess["mics"][sess["ref"]]}
    tracker = SoundTracker()
    if use_imu:
        for name, (acc, imu_rate) in sess["acc"].items():
            t_ns = (np.arange(acc.shape[0]) * 1e9 / imu_rate).astype(np.int64)
            tracker.on_imu(name, t_ns, acc, float("nan"))
    dets = {n: TransientDetector() for n in mics}
    n = min(x.size for x in mics.values())
    events = []
    for i in range(0, n, BLOCK):
        for name, x in mics.items():
            for tr in dets[name].process(x[i:i + BLOCK]):
                tracker.add(name, round(tr.index * 1e9 / rate), tr.index / rate, tr)
        events += tracker.poll(round(min(i + BLOCK, n) * 1e9 / rate))
    for name, det in dets.items():
        for tr in det.flush():
            tracker.add(name, round(tr.index * 1e9 / rate), tr.index / rate, tr)
    events += tracker.flush()
    return np.array([e.t_ns / 1e9 for e in events])


def detector_only(sess: dict) -> np.ndarray:
    """Onset times (s) of the transient detector's candidates (every band), fed in 50 ms blocks: no tracker."""
    rate, x = sess["rate"], sess["mics"][sess["ref"]]
    det, idx = TransientDetector(), []
    for i in range(0, x.size, BLOCK):
        idx += [tr.index for tr in det.process(x[i:i + BLOCK])]
    idx += [tr.index for tr in det.flush()]
    return np.unique(np.array(idx, float)) / rate


def librosa_detect(sess: dict) -> np.ndarray:
    import librosa

    y = sess["mics"][sess["ref"]].astype(np.float32)
    # Library defaults: spectral-flux onset strength, hop 512, peak picking per librosa's documented defaults.
    return np.asarray(librosa.onset.onset_detect(y=y, sr=sess["rate"], units="time"))


def aubio_detect(sess: dict, method: str) -> np.ndarray:
    import aubio

    win, hop = 512, 256  # aubio's documented defaults (aubio onset -B 512 -H 256)
    det = aubio.onset(method, win, hop, sess["rate"])
    y = sess["mics"][sess["ref"]].astype(np.float32)
    out = []
    for i in range(0, y.size - hop + 1, hop):
        if det(y[i:i + hop]):
            out.append(det.get_last_s())
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=8, help="simulated sessions [%(default)s]")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per session [%(default)s]")
    p.add_argument("--seed", type=int, default=500, help="first session seed (standard set: 0..47) [%(default)s]")
    args = p.parse_args(argv)
    from tqdm import tqdm

    detectors = {
        "jointmon (mic only)": lambda s: jointmon_detect(s, use_imu=False),
        "jointmon (2 mics + IMU)": lambda s: jointmon_detect(s, use_imu=True),
        "jointmon detector only": detector_only,
        "librosa onset_detect": librosa_detect,
        "aubio hfc (default)": lambda s: aubio_detect(s, "hfc"),
        "aubio complex": lambda s: aubio_detect(s, "complex"),
        "aubio specflux": lambda s: aubio_detect(s, "specflux"),
    }
    # Warm-up on 1 s of noise: librosa JIT-compiles (numba) on its first call; time steady state for everyone.
    noise = np.random.default_rng(0).normal(0.0, 0.002, 16000)
    warm = {"ref": "m", "rate": 16000, "mics": {"m": noise}, "acc": {"m": (np.zeros((200, 3)), 200)}, "labels": []}
    for fn in detectors.values():
        fn(warm)
    counts = {name: np.zeros(3, int) for name in detectors}  # tp, fp, fn
    seconds = dict.fromkeys(detectors, 0.0)
    cpu = dict.fromkeys(detectors, 0.0)
    audio_min = 0.0
    for k in tqdm(range(args.seed, args.seed + args.sessions), desc="sessions", unit="session"):
        sess = simulate(k, args.duration)
        audio_min += sess["mics"][sess["ref"]].size / sess["rate"] / 60.0
        starts = np.array([a for a, _ in sess["labels"]])
        ends = np.array([b for _, b in sess["labels"]])
        for name, fn in detectors.items():
            t, c = time.perf_counter(), time.process_time()
            found = fn(sess)
            seconds[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
            m = match_events(found, starts, TOLERANCE_S, ends)
            counts[name] += (len(m.pairs), len(m.false_positives), len(m.missed))
    print(f"\n{args.sessions} sessions, {audio_min:.1f} min of audio, onset F1 at {TOLERANCE_S * 1e3:.0f} ms")
    print(f"{'detector':26s} {'P':>6s} {'R':>6s} {'F1':>6s} {'wall s/audio min':>17s} {'CPU s/audio min':>16s}")
    for name, (tp, fp, fn) in counts.items():
        pr, rc = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * pr * rc / max(pr + rc, 1e-12)
        wall, proc = seconds[name] / audio_min, cpu[name] / audio_min
        prf = f"{pr:6.3f} {rc:6.3f} {f1:6.3f}" if name not in TIME_ONLY else f"{'-':>6s} {'-':>6s} {'-':>6s}"
        print(f"{name:26s} {prf} {wall:17.3f} {proc:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
