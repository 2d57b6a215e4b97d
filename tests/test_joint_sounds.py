"""Joint-sound synthesis: SNR definition, the signature of each sound type, impacts, config errors, speed.

Every joint sound is isolated exactly: the same seed with and without it gives bit-identical backgrounds
(independent random streams per source), so ``with - without`` is the sound alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import signal

from firmware_sim.joint_sounds import Impact, activity_from_angular_rate, synthesize_microphones
from firmware_sim.session import Label
from jointmon.errors import ConfigError

FS = 16000
SENSORS = ["thigh", "shank"]  # "shank" is the reference sensor (0 dB), the thigh hears joint sounds quieter
REP_PERIOD_S, REP_LEN_S, PEAK_DEG = 4.0, 3.0, 100.0
JOINT_SOUND_KEYS = ("clicks", "click_refractory_s", "snaps", "crepitus", "snr_db")


@dataclass
class Motion:
    t: np.ndarray
    angle: np.ndarray
    activity: np.ndarray
    reps: list[tuple[float, float]]


def squats(duration_s: float) -> Motion:
    """Squats every 4 s, 3 s each, 0 -> 100 -> 0 deg (cosine), standing in between (peak ~105 deg/s)."""
    t = np.arange(round(duration_s * FS)) / FS
    starts = np.arange(1.0, duration_s - REP_LEN_S + 1e-9, REP_PERIOD_S)
    reps = [(float(a), float(a + REP_LEN_S)) for a in starts]
    phase = np.clip((t - 1.0) % REP_PERIOD_S / REP_LEN_S, 0.0, 1.0) * (t >= 1.0) * (t < starts[-1] + REP_LEN_S)
    angle = PEAK_DEG / 2 * (1 - np.cos(2 * np.pi * phase))
    return Motion(t, angle, activity_from_angular_rate(np.gradient(angle) * FS), reps)


@pytest.fixture(scope="module")
def motion() -> Motion:
    return squats(40.0)


def synth(mo: Motion, sounds: dict[str, Any], seed: int = 0, impacts: list | None = None,
          sensors: list[str] | None = None) -> tuple[dict[str, np.ndarray], list[Label]]:
    return synthesize_microphones(mo.t, mo.angle, mo.activity, mo.reps, impacts or [], sounds, sensors or SENSORS,
                                  "left_knee", np.random.default_rng(seed))


def isolate(mo: Motion, sounds: dict[str, Any], seed: int = 0) -> tuple[dict, dict, list[Label]]:
    """(joint sounds alone, background alone, labels) per sensor."""
    full, labels = synth(mo, sounds, seed)
    bg, none = synth(mo, {k: v for k, v in sounds.items() if k not in JOINT_SOUND_KEYS}, seed)
    assert none == []
    return {k: full[k] - bg[k] for k in full}, bg, labels


def idx(t_s: float) -> int:
    return round(t_s * FS)


def measured_snr_db(ev: np.ndarray, bg: np.ndarray, lab: Label) -> float:
    """The documented definition, written out independently of the module: peak 1 ms mean energy of the
    sound alone / mean power of the background over the label span +-100 ms, reference sensor."""
    lo, hi = max(idx(lab.t_start_s) - 1600, 0), idx(lab.t_end_s) + 1601
    e_1ms = np.convolve(ev[lo:hi] ** 2, np.ones(16) / 16)
    return float(10 * np.log10(e_1ms.max() / np.mean(bg[lo:hi] ** 2)))


def band_fraction(x: np.ndarray, f_lo: float, f_hi: float = FS / 2) -> float:
    spec = np.abs(np.fft.rfft(x, 8192)) ** 2
    f = np.fft.rfftfreq(8192, 1 / FS)
    return float(spec[(f >= f_lo) & (f <= f_hi)].sum() / spec.sum())


def energy_times_ms(x: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    c = np.cumsum(x**2) / np.sum(x**2)
    return [float(np.searchsorted(c, q) / FS * 1000) for q in fractions]


def nonzero_runs(x: np.ndarray) -> np.ndarray:
    """(k, 2) [start, end) of the runs of non-zero samples."""
    return np.flatnonzero(np.diff(np.concatenate(([0], (x != 0).astype(np.int8), [0])))).reshape(-1, 2)


CLICKS = {"clicks": 8, "click_refractory_s": 3.0}
SNAPS = {"snaps": {"angle_deg": [30.0, 60.0]}}
CREPITUS = {"crepitus": {"range_deg": [20.0, 70.0], "level": 0.5}}


# ---------------------------------------------------------------- determinism, independence, shape


def test_same_seed_same_signals_other_seed_different(motion: Motion) -> None:
    sounds = {**CLICKS, **SNAPS, **CREPITUS, "rubbing": 0.5, "snr_db": [0.0, 20.0]}
    impacts = [Impact(5.2, 3.0)]
    a, la = synth(motion, sounds, 7, impacts)
    b, lb = synth(motion, sounds, 7, impacts)
    c, _ = synth(motion, sounds, 8, impacts)
    assert la == lb and len(la) > 20
    for name in SENSORS:
        assert a[name].dtype == np.float64 and a[name].shape == motion.t.shape
        assert np.array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
        assert np.max(np.abs(a[name])) < 1.0


def test_joint_sounds_leave_background_bit_identical(motion: Motion) -> None:
    ev, _, labels = isolate(motion, {**SNAPS, "rubbing": 0.5})
    # Outside the snaps the difference is exactly zero: enabling a sound changes nothing else.
    busy = np.zeros(motion.t.size, bool)
    for lab in labels:
        busy[idx(lab.t_start_s) : idx(lab.t_start_s) + 2000] = True
    for name in SENSORS:
        assert np.all(ev[name][~busy] == 0.0)


def test_defaults_are_background_only(motion: Motion) -> None:
    mics, labels = synth(motion, {})
    assert labels == []
    quiet = slice(idx(0.1), idx(0.9))  # standing still before the first rep
    for name in SENSORS:
        rms = np.sqrt(np.mean(mics[name][quiet] ** 2))
        assert 0.0018 < rms < 0.0035
        t = motion.t
        amp = {f: 2 * np.abs(np.mean(mics[name] * np.exp(-2j * np.pi * f * t))) for f in (47.0, 50.0, 150.0)}
        assert amp[50.0] == pytest.approx(0.0004, rel=0.3) and amp[150.0] == pytest.approx(0.00012, rel=0.3)
        assert amp[50.0] > 3 * amp[47.0]


# ---------------------------------------------------------------- SNR definition


@pytest.mark.parametrize("snr_db", [0.0, 6.0, 20.0])
@pytest.mark.parametrize("kind", [CLICKS, SNAPS, CREPITUS], ids=["click", "snap", "crepitus"])
def test_snr_as_defined(motion: Motion, kind: dict, snr_db: float) -> None:
    ev, bg, labels = isolate(motion, {**kind, "snr_db": snr_db, "rubbing": 0.5})
    assert len(labels) >= 8
    for lab in labels:
        assert lab.magnitude == snr_db
        assert measured_snr_db(ev["shank"], bg["shank"], lab) == pytest.approx(snr_db, abs=1.0)


def test_snr_range_drawn_per_event(motion: Motion) -> None:
    ev, bg, labels = isolate(motion, {**CLICKS, "snr_db": [0.0, 20.0]})
    mags = np.array([lab.magnitude for lab in labels])
    assert np.all((mags >= 0.0) & (mags <= 20.0)) and np.ptp(mags) > 8.0
    for lab in labels:
        assert measured_snr_db(ev["shank"], bg["shank"], lab) == pytest.approx(lab.magnitude, abs=1.0)


def test_subtable_snr_overrides(motion: Motion) -> None:
    _, _, labels = isolate(motion, {"snr_db": 20.0, "snaps": {"angle_deg": [40.0, 50.0], "snr_db": 3.0}})
    assert {lab.magnitude for lab in labels} == {3.0}


def test_every_sensor_hears_the_same_sound_a_little_quieter(motion: Motion) -> None:
    ev, _, labels = isolate(motion, {**CLICKS, **SNAPS})
    for lab in labels:
        seg = slice(idx(lab.t_start_s), idx(lab.t_start_s) + 1500)
        ref, other = ev["shank"][seg], ev["thigh"][seg]
        gain = float(np.dot(ref, other) / np.dot(ref, ref))
        assert -4.6 <= 20 * np.log10(gain) <= 0.0
        # Same waveform, same sample: no delay, nothing else.
        assert np.max(np.abs(other - gain * ref)) < 1e-9 * np.max(np.abs(ref))


# ---------------------------------------------------------------- clicks


def test_clicks_short_broadband_during_movement(motion: Motion) -> None:
    ev, _, labels = isolate(motion, CLICKS)
    clicks = [lab for lab in labels if lab.type == "click"]
    assert len(clicks) == 8
    for lab in clicks:
        i0 = idx(lab.t_start_s)
        x = ev["shank"][i0 : i0 + 800]
        assert np.all(ev["shank"][i0 - 800 : i0] == 0.0) and x[0] != 0.0  # sharp onset at the label
        (t90,) = energy_times_ms(x, (0.9,))
        assert t90 < 6.0
        assert band_fraction(x, 2000.0) > 0.4
        assert motion.activity[i0] >= 0.3
        assert 0.0 < lab.t_end_s - lab.t_start_s < 0.006
    # Clicks happen at whatever angle the knee is at, not at one angle.
    assert np.ptp([motion.angle[idx(lab.t_start_s)] for lab in clicks]) > 30.0


def test_click_refractory_period(motion: Motion) -> None:
    _, labels = synth(motion, {"clicks": 50, "click_refractory_s": 4.0})
    starts = np.array([lab.t_start_s for lab in labels])
    assert len(starts) >= 5 and np.all(np.diff(starts) >= 4.0)
    # Default: 20 minutes, so a 40 s session holds one click however many are asked for.
    _, labels = synth(motion, {"clicks": 5})
    assert len(labels) == 1


# ---------------------------------------------------------------- snaps


def test_snaps_same_angle_every_rep_low_frequency(motion: Motion) -> None:
    ev, _, labels = isolate(motion, SNAPS)
    assert [lab.type for lab in labels] == ["snap"] * len(motion.reps)
    angles = []
    for lab, (r0, r1) in zip(labels, motion.reps, strict=True):
        assert r0 <= lab.t_start_s < r1  # one per rep
        i0 = idx(lab.t_start_s)
        angles.append(motion.angle[i0])
        assert motion.angle[i0 + 16] > motion.angle[i0 - 16]  # default: on the way down (flexion increasing)
        x = ev["shank"][i0 : i0 + 3000]
        t05, t95 = energy_times_ms(x, (0.05, 0.95))
        assert 10.0 <= t95 - t05 <= 30.0
        assert 10.0 <= (lab.t_end_s - lab.t_start_s) * 1000 <= 30.0
        assert band_fraction(x, 0.0, 500.0) > 0.85
    assert 30.0 <= np.median(angles) <= 60.0
    assert np.max(np.abs(np.array(angles) - (max(angles) + min(angles)) / 2)) <= 2.0


def test_snap_direction_and_probability(motion: Motion) -> None:
    _, down = synth(motion, {"snaps": {"angle_deg": [45.0, 45.0], "direction": "decreasing"}})
    assert len(down) == len(motion.reps)
    assert all(motion.angle[idx(lab.t_start_s) + 16] < motion.angle[idx(lab.t_start_s) - 16] for lab in down)
    _, both = synth(motion, {"snaps": {"angle_deg": [45.0, 45.0], "direction": "both"}})
    assert len(both) == 2 * len(motion.reps)
    some = [len(synth(motion, {"snaps": {"angle_deg": [45.0, 45.0], "probability": 0.5}}, s)[1]) for s in range(8)]
    assert 0.3 < np.mean(some) / len(motion.reps) < 0.7
    # A rep that never reaches the snap angle cannot snap.
    assert synth(motion, {"snaps": {"angle_deg": [120.0, 130.0]}})[1] == []


# ---------------------------------------------------------------- crepitus


def test_crepitus_trains_inside_range(motion: Motion) -> None:
    ev, _, labels = isolate(motion, CREPITUS)
    assert [lab.type for lab in labels] == ["crepitus"] * len(motion.reps)
    for name in SENSORS:
        nz = ev[name] != 0.0
        assert np.all((motion.angle[nz] >= 20.0) & (motion.angle[nz] <= 70.0))
    runs = nonzero_runs(ev["shank"])
    lengths_ms = (runs[:, 1] - runs[:, 0]) / FS * 1000
    assert lengths_ms.max() <= 2.0  # sub-ms to 2 ms bursts
    for lab, (r0, r1) in zip(labels, motion.reps, strict=True):
        assert r0 <= lab.t_start_s < lab.t_end_s < r1
        mine = runs[(runs[:, 0] >= idx(lab.t_start_s)) & (runs[:, 1] <= idx(lab.t_end_s) + 1)]
        assert len(mine) >= 5
        assert mine[0, 0] == idx(lab.t_start_s) and mine[-1, 1] - 1 == idx(lab.t_end_s)  # label spans the train
        gaps_ms = np.diff(mine[:, 0]) / FS * 1000
        within = gaps_ms[gaps_ms < 100]  # onset-to-onset, not across the bottom of the squat
        assert within.min() >= 4.0 and 5.0 <= np.median(within) <= 30.0
        assert np.std(within) / np.mean(within) > 0.3  # irregular


def test_crepitus_level_sets_density(motion: Motion) -> None:
    counts = {}
    for level in (0.1, 1.0):
        ev, _, _ = isolate(motion, {"crepitus": {"range_deg": [20.0, 70.0], "level": level}})
        counts[level] = len(nonzero_runs(ev["shank"]))
    assert counts[1.0] > 2 * counts[0.1]
    assert synth(motion, {"crepitus": {"range_deg": [20.0, 70.0], "level": 0.0}})[1] == []


# ---------------------------------------------------------------- background events: impacts, rubbing


def test_impacts_at_their_times_scaled_by_peak_g(motion: Motion) -> None:
    impacts = [Impact(4.5, 2.0), Impact(12.3, 4.0), Impact(20.7, 8.0)]
    with_imp, labels = synth(motion, {}, impacts=impacts)
    without, _ = synth(motion, {})
    assert labels == []  # background, never labelled
    hp = signal.butter(4, 1000.0, "highpass", fs=FS, output="sos")
    for name in SENSORS:
        thud = with_imp[name] - without[name]
        runs = nonzero_runs(thud)
        assert [r0 for r0, _ in runs] == [idx(imp.t_s) for imp in impacts]
        per_g = [np.max(np.abs(thud[r0:r1])) / imp.peak_g for (r0, r1), imp in zip(runs, impacts, strict=True)]
        assert np.ptp(per_g) < 1e-9 and 0.02 * 10 ** (-6 / 20) <= per_g[0] <= 0.02
        # The onset is broadband: above 1 kHz it stands out like a click (a false alarm the IMU must reject).
        for imp in impacts[1:]:
            i0 = idx(imp.t_s)
            hi_thud = signal.sosfilt(hp, with_imp[name][i0 - 1600 : i0 + 1600])
            hi_bg = signal.sosfilt(hp, without[name][i0 - 1600 : i0 + 1600])
            assert 10 * np.log10(np.max(np.convolve(hi_thud**2, np.ones(16) / 16)) / np.mean(hi_bg**2)) > 10.0
    off, _ = synth(motion, {"impact_gain": 0.0}, impacts=impacts)
    assert all(np.array_equal(off[n], without[n]) for n in SENSORS)


def test_rubbing_smooth_only_when_moving_independent_per_sensor(motion: Motion) -> None:
    rubbed, _ = synth(motion, {"rubbing": 1.0})
    clean, _ = synth(motion, {})
    rub = {n: rubbed[n] - clean[n] for n in SENSORS}
    for x in rub.values():
        assert 0.001 < np.sqrt(np.mean(x**2)) < 0.006
        # Not transient: the 1 ms energy never jumps far above the 100 ms mean around it.
        e_1ms = np.convolve(x**2, np.ones(16) / 16, "same")
        e_100ms = np.convolve(x**2, np.ones(1600) / 1600, "same")
        loud = e_100ms > 0.1 * e_100ms.max()
        assert 10 * np.log10(np.max(e_1ms[loud] / e_100ms[loud])) < 8.0
    assert abs(np.corrcoef(rub["thigh"], rub["shank"])[0, 1]) < 0.05
    still = Motion(motion.t, np.zeros_like(motion.t), np.zeros_like(motion.t), [])
    a, _ = synthesize_microphones(still.t, still.angle, still.activity, [], [], {"rubbing": 1.0}, SENSORS, "k",
                                  np.random.default_rng(0))
    b, _ = synthesize_microphones(still.t, still.angle, still.activity, [], [], {}, SENSORS, "k",
                                  np.random.default_rng(0))
    assert all(np.array_equal(a[n], b[n]) for n in SENSORS)


def test_activity_from_angular_rate() -> None:
    a = activity_from_angular_rate(np.array([-300.0, -40.0, 0.0, 40.0, 105.0, 1e4]))
    assert a[2] == 0.0 and a[1] == a[3] and 0.3 < a[3] < 0.45 and 0.65 < a[4] < 0.8 and a[5] == pytest.approx(1.0)
    assert np.all((a >= 0) & (a <= 1))


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("sounds", "key"),
    [
        ({"clickz": 3}, "clickz"),
        ({"snr_db": "loud"}, "snr_db"),
        ({"snr_db": [0.0, 10.0, 20.0]}, "snr_db"),
        ({"snr_db": [20.0, 0.0]}, "snr_db"),
        ({"clicks": 2.5}, "clicks"),
        ({"clicks": True}, "clicks"),
        ({"click_refractory_s": -1.0}, "click_refractory_s"),
        ({"snaps": 3}, "snaps"),
        ({"snaps": {"angle_deg": 45.0}}, "angle_deg"),
        ({"snaps": {"probability": 0.5}}, "angle_deg"),
        ({"snaps": {"angle_deg": [30, 60], "prob": 0.5}}, "prob"),
        ({"snaps": {"angle_deg": [30, 60], "probability": 1.5}}, "probability"),
        ({"snaps": {"angle_deg": [30, 60], "direction": "down"}}, "direction"),
        ({"crepitus": {"range_deg": [70, 20]}}, "range_deg"),
        ({"crepitus": {"range_deg": [20, 70], "level": "high"}}, "level"),
        ({"crepitus": {"range_deg": [20, 70], "grit": 1}}, "grit"),
        ({"rubbing": True}, "rubbing"),
        ({"background_level": "2"}, "background_level"),
        ({"hum_level": -1}, "hum_level"),
        ({"impact_gain": [1]}, "impact_gain"),
    ],
)
def test_bad_sounds_table_names_the_key(motion: Motion, sounds: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        synth(motion, sounds)


# ---------------------------------------------------------------- speed


def test_sixty_seconds_two_sensors_fast() -> None:
    mo = squats(60.0)
    sounds = {**CLICKS, **SNAPS, **CREPITUS, "rubbing": 0.5, "snr_db": [0.0, 20.0]}
    impacts = [Impact(t, 3.0) for t in np.arange(0.5, 60.0, 0.7)]
    synth(squats(5.0), sounds)  # warm-up (filter design caches, lazy imports)
    t0 = time.perf_counter()
    _, labels = synth(mo, sounds, impacts=impacts)
    elapsed = time.perf_counter() - t0
    assert len(labels) > 30
    assert elapsed < 1.5, f"{elapsed:.2f} s"
