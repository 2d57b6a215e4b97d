"""Click detector on hand-made signals, and chunking equivalence."""

import numpy as np
import pytest

from analysis.click_detector import ClickDetector, ClickDetectorSettings

FS = 16000


def click(amplitude: float = 0.1, freq_hz: float = 3000.0, decay_s: float = 0.001, length_s: float = 0.006):
    n = np.arange(round(length_s * FS))
    return amplitude * np.exp(-n / (decay_s * FS)) * np.sin(2 * np.pi * freq_hz * n / FS)


def noise(seconds: float, rms: float = 0.002, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, rms, round(seconds * FS))


def add_at(x: np.ndarray, t_s: float, burst: np.ndarray) -> None:
    i = round(t_s * FS)
    x[i:i + burst.size] += burst


def run_chunks(x: np.ndarray, sizes) -> list:
    det, out, i = ClickDetector(), [], 0
    for size in sizes:
        out += det.process(x[i:i + size])
        i += size
        if i >= x.size:
            break
    return out + det.process(x[i:]) + det.flush()


def test_single_click_found_at_its_onset():
    x = noise(3.0)
    add_at(x, 1.7, click())
    found = ClickDetector().process(x)
    assert len(found) == 1
    assert abs(found[0].index / FS - 1.7) < 0.001
    # 0.1 peak over 0.002 RMS noise: the short-time energy rises well above a 12 dB threshold
    assert found[0].magnitude_db > 20


def test_click_train_each_click_separately():
    x = noise(5.0, seed=1)
    times = [1.0, 1.3, 2.05, 3.5, 4.4]
    for t in times:
        add_at(x, t, click(amplitude=0.05))
    found = [d.index / FS for d in ClickDetector().process(x)]
    assert len(found) == len(times)
    assert np.max(np.abs(np.array(found) - times)) < 0.001


def test_noise_rumble_and_hum_alone_give_no_detection():
    t = np.arange(round(30 * FS)) / FS
    rng = np.random.default_rng(2)
    rumble = np.convolve(rng.normal(0, 0.05, t.size), np.ones(200) / 200, mode="same")  # < 100 Hz
    x = noise(30, seed=3) + rumble * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.01 * np.sin(2 * np.pi * 50 * t)
    assert ClickDetector().process(x) == []


def test_quiet_click_below_threshold_is_not_reported():
    x = noise(3.0, seed=4)
    add_at(x, 1.5, click(amplitude=0.002))  # about the noise RMS: not a detectable transient
    assert ClickDetector().process(x) == []


def test_refractory_merges_a_ringing_click():
    x = noise(2.0, seed=5)
    add_at(x, 1.0, click())
    add_at(x, 1.02, click())  # 20 ms later: inside the 50 ms refractory period
    assert len(ClickDetector().process(x)) == 1
    settings = ClickDetectorSettings(refractory_s=0.01)
    assert len(ClickDetector(settings).process(x)) == 2


@pytest.mark.parametrize("sizes", [
    [800] * 100,  # 50 ms frames
    [1] * 50 + [7919] * 100,  # single samples, then odd sizes
    list(np.random.default_rng(9).integers(1, 3000, 200)),
])
def test_chunked_equals_whole(sizes):
    x = noise(6.0, seed=6)
    for t in (0.8, 2.0, 2.0004 + 0.1, 4.9999):
        add_at(x, t, click())
    whole = run_chunks(x, [x.size])
    parts = run_chunks(x, sizes)
    assert [d.index for d in parts] == [d.index for d in whole]
    np.testing.assert_allclose([d.magnitude_db for d in parts], [d.magnitude_db for d in whole], atol=1e-9)
    assert len(whole) == 4
