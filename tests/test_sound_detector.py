"""Joint-sound detection on hand-made signals: transients, classes, impact veto, streaming equivalence."""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis.sound_events import SoundSettings, SoundTracker
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


def sounds(x: np.ndarray, imu_impacts_s: tuple[float, ...] = (), rate_dps: float = 20.0) -> list:
    """Run one microphone (as both sensors' is not needed here) through detector + tracker, times in ns."""
    det, tr = TransientDetector(), SoundTracker()
    t_imu = np.arange(round(x.size / FS * 200)) / 200
    acc = np.zeros((t_imu.size, 3))
    acc[:, 2] = 1.0
    for t in imu_impacts_s:
        acc[np.searchsorted(t_imu, t), 2] = 4.0  # a 3 g spike for one sample
    tr.on_imu("shank", (t_imu * 1e9).astype(np.int64), acc)
    tr.on_angles((t_imu * 1e9).astype(np.int64), 10.0 + rate_dps * t_imu)  # flexing (default 20 deg/s)
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
    assert ev[0].details["flexion_deg"] == pytest.approx(10.0 + 20.0 * ev[0].stream_t_s, abs=0.1)


def test_snap_is_a_snap():
    x = noise(3.0, seed=1)
    add_at(x, 1.2, snap())
    ev = sounds(x)
    assert [e.type for e in ev] == ["snap"]
    assert abs(ev[0].stream_t_s - 1.2) < 0.02


def test_a_thump_while_the_joint_is_still_is_no_snap():
    x = noise(3.0, seed=1)
    add_at(x, 1.2, snap())
    assert sounds(x, rate_dps=0.0) == []


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


def test_a_click_during_an_impact_is_still_a_click():
    # A 3.5 kHz resonance with no thud tail, inside the impact veto window (0-20 ms before the IMU's jump).
    for dt in (0.0, 0.01, 0.02):
        x = noise(3.0, seed=4)
        add_at(x, 1.5, click())
        ev = sounds(x, imu_impacts_s=(1.5 + dt,))
        assert [e.type for e in ev] == ["click"] and abs(ev[0].stream_t_s - 1.5) < 0.003


def test_a_tonal_click_inside_a_crepitus_train_stands_out():
    """A 4 kHz click between the bursts of a train, about as loud as its loudest ones: what both microphones share
    is one tone above the grinding's 0.4-3 kHz, so it is a click; without that test it is one more burst."""
    x = noise(4.0, seed=2)
    rng = np.random.default_rng(5)
    times = 1.0 + np.cumsum(rng.uniform(0.02, 0.06, 14))
    for k, t in enumerate(times):
        add_at(x, t, burst(0.03, rng.uniform(600, 2500), k))
    t_click = (times[6] + times[7]) / 2
    add_at(x, t_click, click(0.05, 4000.0))

    def run(settings: SoundSettings) -> list:
        det, tr = TransientDetector(), SoundTracker(settings)
        t_ns = (np.arange(round(x.size / FS * 200)) * 5e6).astype(np.int64)
        tr.on_imu("shank", t_ns, np.tile([0.0, 0.0, 1.0], (t_ns.size, 1)))
        tr.on_angles(t_ns, 10.0 + 20.0 * t_ns / 1e9)
        tr.on_mic("shank", 0, FS, x)
        for c in det.process(x) + det.flush():
            tr.add("shank", round(c.index / FS * 1e9), c.index / FS, c)
        return [(e.type, round(e.stream_t_s, 2)) for e in tr.flush()]

    assert run(SoundSettings()) == [("crepitus", round(times[0], 2)), ("click", round(t_click, 2))]
    assert run(replace(SoundSettings(), standout_tone_hz=1e9)) == [("crepitus", round(times[0], 2))]


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


def snap_jerk(t_s: np.ndarray, t0: float, peak_g: float = 0.5) -> np.ndarray:
    """A tendon snap's jerk along the segment: 60 Hz, x^3 e^-x envelope (tau 2.5 ms), as the simulator's."""
    x = np.clip((t_s - t0) / 0.0025, 0, None)
    env = x**3 * np.exp(-x) / (27 * np.exp(-3))
    return peak_g * env * np.sin(2 * np.pi * 60 * np.clip(t_s - t0, 0, None))


def imu_stream(seconds: float, jerks_s=(), kinks_s=(), seed: int = 0):
    """200 Hz accelerometer (g): slow movement, noise, snap jerks (fine-grained then decimated) and kinks."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 200)) / 200
    acc = np.zeros((t.size, 3))
    acc[:, 2] = 1 + 0.3 * np.sin(2 * np.pi * 0.5 * t) + rng.normal(0, 0.002, t.size)
    for j in jerks_s:
        acc[:, 2] += snap_jerk(t, j)
    for k in kinks_s:  # a change of direction: the slope of the acceleration turns
        acc[:, 0] += np.abs(t - k) * 8.0
    return (t * 1e9).astype(np.int64), acc


@pytest.mark.parametrize("sizes", [[2000], [1] * 30 + [7] * 100 + [2000],
                                   list(np.random.default_rng(3).integers(1, 25, 400))])
def test_jerk_ring_found_in_any_blocks_and_not_for_a_kink(sizes):
    from analysis.sound_jerk import JerkDetector

    t, acc = imu_stream(4.0, jerks_s=(1.0, 3.0), kinks_s=(2.0,))
    det, i = JerkDetector(), 0
    for n in sizes:
        det.update("shank", t[i:i + n], acc[i:i + n])
        i += n
        if i >= t.size:
            break
    rings = det.ring(0, t[-1])
    assert rings["shank"][1] > 0.04
    near = {round(tp / 1e9, 1) for tp, v in det._peaks["shank"] if v > 0.02}
    assert near == {1.0, 3.0}  # the two jerks, 0-15 ms after their start; nothing at the kink


def test_jerk_detector_restarts_after_a_gap():
    from analysis.sound_jerk import JerkDetector

    t, acc = imu_stream(3.0)
    det = JerkDetector()
    det.update("shank", t[:300], acc[:300])
    acc2 = acc.copy()
    acc2[300:, 2] += 2.0  # after a lost stretch the sensor reads differently: no ring across the gap
    det.update("shank", t[400:], acc2[400:])
    assert det.restarts == 1
    assert det.ring(0, t[-1]) == {}


def test_coherence_same_sound_on_both_microphones_vs_noise():
    from analysis.sound_coherence import coherence

    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 0.002, 64), rng.normal(0, 0.002, 64)
    c = click(0.01)[:32]
    ca, cb = a.copy(), b.copy()
    ca[26:58] += c  # the window is centred on the detector's peak frame: the click starts ~1 ms before
    cb[27:59] += 0.7 * c  # a sample later, 3 dB quieter
    assert coherence(ca, cb, FS, (1800.0, 6500.0), 2) > 0.7
    noise = [coherence(rng.normal(0, 1, 64), rng.normal(0, 1, 64), FS, (1800.0, 6500.0), 2) for _ in range(200)]
    assert np.percentile(noise, 90) < 0.55


def test_mic_history_windows_across_blocks_and_gaps():
    from analysis.sound_coherence import MicHistory

    h = MicHistory(FS, 0.5)
    x = np.arange(2400, dtype=float)
    step = 1e9 / FS
    for i in range(0, 1600, 800):  # two consecutive 50 ms blocks
        h.add(round(i * step), x[i:i + 800])
    h.add(round(2000 * step), x[2000:2400])  # after a gap of 400 samples
    np.testing.assert_array_equal(h.window(round(780 * step), 40), x[780:820])
    assert h.window(round(1590 * step), 20) is None  # would straddle the gap
    assert h.window(round(2390 * step), 20) is None  # not arrived yet


def test_weak_click_heard_by_both_microphones():
    """A click at ~10 dB over the background per microphone: a burst on one microphone alone would be too weak
    to count, the two microphones' coherence makes it a click; the same level on one microphone only does not."""
    xs = {"shank": noise(3.0, seed=12), "thigh": noise(3.0, seed=13)}
    w = click(0.0105, freq_hz=4000.0)  # 10.5-10.7 dB: below a lone click's 11 dB
    add_at(xs["shank"], 1.5, w)
    add_at(xs["thigh"], 1.5, 0.8 * w)

    def run(mics):
        tr = SoundTracker()
        for name, x in mics.items():
            det = TransientDetector()
            tr.on_mic(name, 0, FS, x)
            for c in det.process(x) + det.flush():
                tr.add(name, round(c.index / FS * 1e9), c.index / FS, c)
        return tr.flush()

    both = run(xs)
    assert [e.type for e in both] == ["click"] and abs(both[0].stream_t_s - 1.5) < 0.003
    lone = {"shank": xs["shank"], "thigh": noise(3.0, seed=13)}
    assert [e.type for e in run(lone)] == []


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

