"""Joint-sound detection on hand-made signals: transients, classes, impact veto, streaming equivalence."""

import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.sound_events import SoundTracker
from analysis.transient_detector import TransientDetector

FS = 16000


def noise(seconds: float, rms: float = 0.002, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, rms, round(seconds * FS))


def click(amplitude: float = 0.05, freq_hz: float = 3500.0, decay_s: float = 0.0007) -> np.ndarray:
    n = np.arange(round(0.006 * FS))
    return amplitude * np.exp(-n / (decay_s * FS)) * np.sin(2 * np.pi * freq_hz * n / FS)


def snap(amplitude: float = 0.05, freq_hz: float = 150.0, decay_s: float = 0.012) -> np.ndarray:
    n = np.arange(round(0.15 * FS))
    rise = np.clip(n / (0.002 * FS), 0, 1)
    return amplitude * rise * np.exp(-n / (decay_s * FS)) * np.sin(2 * np.pi * freq_hz * n / FS)


def burst(amplitude: float, freq_hz: float, seed: int) -> np.ndarray:
    n = np.arange(round(0.001 * FS))
    env = np.sin(np.pi * (n + 0.5) / n.size) ** 2
    rng = np.random.default_rng(seed)
    return amplitude * env * (0.6 * np.sin(2 * np.pi * freq_hz * n / FS) + 0.8 * rng.standard_normal(n.size))


def thud(amplitude: float = 0.08) -> np.ndarray:
    """An impact as the microphone hears it: a short crack, a 250 Hz knock and a 50 Hz thud."""
    n = np.arange(round(0.2 * FS))
    t = n / FS
    w = np.exp(-t / 0.03) * np.cos(2 * np.pi * 50 * t) + 0.5 * np.exp(-t / 0.006) * np.cos(2 * np.pi * 250 * t)
    w[:12] += 0.5 * np.random.default_rng(3).standard_normal(12)
    return amplitude * w / np.abs(w).max()


def add_at(x: np.ndarray, t_s: float, w: np.ndarray) -> None:
    i = round(t_s * FS)
    x[i:i + w.size] += w[: x.size - i]


def sounds(x: np.ndarray, imu_impacts_s: tuple[float, ...] = ()) -> list:
    """Run one microphone (as both sensors' is not needed here) through detector + tracker, times in ns."""
    det, tr = TransientDetector(), SoundTracker()
    t_imu = np.arange(round(x.size / FS * 200)) / 200
    acc = np.zeros((t_imu.size, 3))
    acc[:, 2] = 1.0
    for t in imu_impacts_s:
        acc[np.searchsorted(t_imu, t), 2] = 4.0  # a 3 g spike for one sample
    tr.on_imu("shank", (t_imu * 1e9).astype(np.int64), acc, 30.0)
    for c in det.process(x) + det.flush():
        tr.add("shank", round(c.index / FS * 1e9), c.index / FS, c)
    return tr.flush()


def test_single_click_is_one_click_at_its_onset():
    x = noise(3.0)
    add_at(x, 1.7, click())
    ev = sounds(x)
    assert [e.type for e in ev] == ["click"]
    assert abs(ev[0].stream_t_s - 1.7) < 0.003
    assert ev[0].confidence > 0.9
    assert ev[0].details["flexion_deg"] == 30.0


def test_snap_is_a_snap():
    x = noise(3.0, seed=1)
    add_at(x, 1.2, snap())
    ev = sounds(x)
    assert [e.type for e in ev] == ["snap"]
    assert abs(ev[0].stream_t_s - 1.2) < 0.02


def test_crepitus_train_is_one_event_at_its_start_with_its_burst_count():
    x = noise(4.0, seed=2)
    rng = np.random.default_rng(5)
    times = 1.0 + np.cumsum(rng.uniform(0.02, 0.06, 12))
    for k, t in enumerate(times):
        add_at(x, t, burst(0.03, rng.uniform(600, 2500), k))
    ev = sounds(x)
    assert [e.type for e in ev] == ["crepitus"]
    assert abs(ev[0].stream_t_s - times[0]) < 0.005
    assert ev[0].details["bursts_at_report"] == 3  # reported at its third burst, not at the train's end


def test_footstep_is_vetoed_by_the_imu_and_not_a_click_without_it():
    x = noise(3.0, seed=4)
    add_at(x, 1.5, thud())
    assert sounds(x, imu_impacts_s=(1.5,)) == []
    # Without the IMU, the crack's spectrum (mostly below 2 kHz) still keeps it from being a click.
    assert "click" not in [e.type for e in sounds(x)]


def test_hum_rumble_and_rubbing_alone_give_no_sound():
    t = np.arange(round(20 * FS)) / FS
    rng = np.random.default_rng(7)
    rumble = np.convolve(rng.normal(0, 0.05, t.size), np.ones(200) / 200, mode="same")
    rub = np.convolve(rng.normal(0, 0.004, t.size), [1, -1], mode="same") * np.clip(np.sin(2 * np.pi * 0.7 * t), 0, 1)
    x = noise(20, seed=8) + rumble * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.004 * np.sin(2 * np.pi * 50 * t) + rub
    assert sounds(x) == []


def run_chunks(x: np.ndarray, sizes) -> list:
    det, out, i = TransientDetector(), [], 0
    for size in sizes:
        out += det.process(x[i:i + size])
        i += size
        if i >= x.size:
            break
    return out + det.process(x[i:]) + det.flush()


@pytest.mark.parametrize("sizes", [
    [800] * 100,  # 50 ms frames
    [1] * 50 + [7919] * 100,  # single samples, then odd sizes
    list(np.random.default_rng(9).integers(1, 3000, 200)),
])
def test_chunked_equals_whole(sizes):
    x = noise(6.0, seed=6)
    for t in (0.8, 2.0, 4.9999):
        add_at(x, t, click())
    add_at(x, 3.0, snap())
    whole = sorted(run_chunks(x, [x.size]), key=lambda c: (c.index, c.band))
    parts = sorted(run_chunks(x, sizes), key=lambda c: (c.index, c.band))
    assert [(c.index, c.band) for c in parts] == [(c.index, c.band) for c in whole]
    np.testing.assert_allclose([c.level_db for c in parts], [c.level_db for c in whole], atol=1e-6)
    assert sum(c.band == "high" and c.level_db > 15 for c in whole) == 3


# ---------------------------------------------------------------- small-subset targets

# Three short standard-set-like sessions (bench/standard_set.py, seeds outside the standard set's 0-47):
# running with crepitus and clicks (impacts), a loaded squat with snaps, crepitus and clicks, leg swings with
# snaps. Scored like `jointmon eval`; the figures reached here, minus a small margin.
SUBSET_SEEDS = (100, 105, 109)
SUBSET_DURATION_S = 20.0
# Reached (2026-11-23): sound (any) F1 0.83 (P 0.94, R 0.75), crepitus F1 0.93, classification accuracy 0.83.
SUBSET_MIN = {"sound_f1": 0.78, "crepitus_f1": 0.88, "classification_accuracy": 0.78}


@pytest.fixture(scope="module")
def subset_score(tmp_path_factory):
    import tomli_w

    from analysis.evaluation import evaluate_session
    from analysis.evaluation_metrics import Score

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import standard_set

    out = tmp_path_factory.mktemp("sound_subset")
    total = Score()
    for k in SUBSET_SEEDS:
        scenario = out / f"s{k}.toml"
        scenario.write_text(tomli_w.dumps(standard_set._rounded(standard_set.scenario_for(k, SUBSET_DURATION_S))))
        standard_set.record_scenario(scenario, out / f"s{k}.jmrec")
        total.add(evaluate_session(out / f"s{k}.jmrec").score)
    return total


def test_subset_sound_detection_f1(subset_score):
    f1 = subset_score.sound_detection.f1
    assert f1 >= SUBSET_MIN["sound_f1"], subset_score.sound_detection.as_dict()


def test_subset_crepitus_f1(subset_score):
    crep = subset_score.by_type["crepitus"]
    assert crep.f1 >= SUBSET_MIN["crepitus_f1"], crep.as_dict()


def test_subset_sound_classification_accuracy(subset_score):
    acc = subset_score.classification_accuracy
    assert acc >= SUBSET_MIN["classification_accuracy"], dict(subset_score.confusion)

