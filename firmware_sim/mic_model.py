"""Contact-microphone model at 16 kHz: background (noise floor, muscle rumble, mains hum) + cavitation clicks.

Values are in full-scale units (FS, int16 full scale = 1.0, |x| < 1). Both sensors sit close to the knee,
so each click is added to both: same waveform, same onset sample; the thigh copy is a few dB quieter.
The true arrival-time difference (a few cm of soft tissue at ~1500 m/s, i.e. tens of microseconds, below
one 62.5 us sample) is neglected.

This first version places a handful of clicks anywhere in descents/ascents. Physiologically a cavitation
cannot repeat in the same joint within ~20 minutes; a later issue adds that refractory model and the
other sound sources (tendon snaps tied to a joint angle, crepitus spread over a range of motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from firmware_sim.knee_kinematics import SquatPlan

MIC_RATE_HZ = 16000
MAINS_HZ = 50.0


@dataclass(frozen=True)
class MicBackgroundModel:
    """Background levels in FS RMS.

    Rumble (muscle sound, 10-90 Hz) RMS = ``rumble_base_fs + rumble_activity_fs * activity`` where
    activity (0..~1.5) grows with knee flexion (load) and flexion speed.
    """

    noise_floor_fs: float = 0.002  # white electronic/contact noise floor
    rumble_base_fs: float = 0.0008  # muscle tone while standing
    rumble_activity_fs: float = 0.0025  # extra muscle sound per unit activity
    hum_fs: float = 0.0004  # 50 Hz mains pickup amplitude (peak); 150 Hz harmonic at 30 % of it


@dataclass(frozen=True)
class ClickEvent:
    """One cavitation click as placed in the session (times in seconds since session start)."""

    onset_index: int  # mic sample index of the onset (first non-zero click sample)
    onset_s: float  # onset_index / MIC_RATE_HZ
    end_s: float  # envelope 40 dB below its start
    freq_hz: float  # resonance frequency of the damped tone, Hz
    tau_s: float  # exponential decay time constant, s
    snr_db: float  # click peak over the local background RMS on the shank sensor, dB
    peak_fs: dict[str, float]  # click peak amplitude per sensor, FS


def movement_activity(plan: SquatPlan, t_s: np.ndarray) -> np.ndarray:
    """Muscle activity proxy (dimensionless, 0 standing, ~1-1.5 fast and deep) at times ``t_s`` (s)."""
    theta, theta_dot, _ = plan.flexion(t_s)
    # Quadriceps load rises with flexion under bodyweight; eccentric/concentric speed adds on top.
    return 0.5 * np.clip(theta / 100.0, 0.0, 1.2) + 0.5 * np.clip(np.abs(theta_dot) / 150.0, 0.0, 1.5)


def background(
    activity: np.ndarray, rng: np.random.Generator, model: MicBackgroundModel | None = None, rate_hz: int = MIC_RATE_HZ
) -> np.ndarray:
    """Background microphone signal (FS), one sample per ``activity`` value (activity at the mic rate)."""
    model = model or MicBackgroundModel()
    n = activity.shape[0]
    t = np.arange(n) / rate_hz
    floor = rng.normal(0.0, model.noise_floor_fs, n)
    # Muscle sound is band-limited well below 100 Hz; filter white noise and normalise to unit RMS.
    sos = signal.butter(2, [10.0, 90.0], btype="bandpass", fs=rate_hz, output="sos")
    rumble = signal.sosfilt(sos, rng.standard_normal(n))
    rumble /= max(float(np.std(rumble)), 1e-12)
    rumble *= model.rumble_base_fs + model.rumble_activity_fs * activity
    ph = rng.uniform(0.0, 2.0 * np.pi, 2)
    hum = model.hum_fs * (np.sin(2 * np.pi * MAINS_HZ * t + ph[0]) + 0.3 * np.sin(2 * np.pi * 3 * MAINS_HZ * t + ph[1]))
    return floor + rumble + hum


def click_waveform(freq_hz: float, tau_s: float, rng: np.random.Generator, rate_hz: int = MIC_RATE_HZ) -> np.ndarray:
    """Unit-peak click: a damped resonance at ``freq_hz`` plus a damped broadband burst, sharp onset.

    Lasts until the envelope is 60 dB down (``tau_s * ln 1000``).
    """
    n = int(np.ceil(tau_s * np.log(1000.0) * rate_hz)) + 1
    t = np.arange(n) / rate_hz
    env = np.exp(-t / tau_s)
    # The broadband part makes the first sample non-zero (sharp onset) and the spectrum wide.
    w = env * (0.8 * np.sin(2 * np.pi * freq_hz * t) + 0.35 * rng.standard_normal(n))
    return w / np.max(np.abs(w))


def place_click_times(
    intervals_s: np.ndarray,
    n_clicks: int,
    rng: np.random.Generator,
    *,
    min_separation_s: float = 1.0,
    max_attempts: int = 2000,
) -> np.ndarray:
    """Sorted onset times (s) of up to ``n_clicks`` clicks, uniform over ``intervals_s`` ((k, 2) [start, end)).

    Clicks are at least ``min_separation_s`` apart. Fewer are returned if they do not fit (short sessions).
    """
    if n_clicks <= 0 or len(intervals_s) == 0:
        return np.empty(0)
    lengths = intervals_s[:, 1] - intervals_s[:, 0]
    # Draw all candidates at once (uniform over the union of intervals), then accept greedily.
    k = rng.choice(len(intervals_s), size=max_attempts, p=lengths / lengths.sum())
    cand = intervals_s[k, 0] + rng.uniform(0.0, 1.0, max_attempts) * lengths[k]
    chosen: list[float] = []
    for c in cand:  # loop over candidate events, not samples
        if all(abs(c - x) >= min_separation_s for x in chosen):
            chosen.append(float(c))
            if len(chosen) == n_clicks:
                break
    return np.sort(np.array(chosen))


def add_clicks(
    mics: dict[str, np.ndarray],
    onsets_s: np.ndarray,
    rng: np.random.Generator,
    *,
    reference: str = "shank",
    rate_hz: int = MIC_RATE_HZ,
    snr_db_range: tuple[float, float] = (20.0, 30.0),
    gains: dict[str, float] | None = None,
    noise_window_s: float = 0.1,
) -> list[ClickEvent]:
    """Add one click per onset time to every signal in ``mics`` (in place, FS); return the placed events.

    The click amplitude is set on the ``reference`` sensor so that its peak is ``snr_db`` (drawn from
    ``snr_db_range``) above the RMS of that sensor's background within +-``noise_window_s`` of the
    onset (the local noise floor, which includes muscle rumble during movement). Other sensors get the
    same waveform times ``gains[name]`` (default: thigh 1-3 dB quieter than shank).
    """
    names = list(mics)
    if gains is None:
        thigh_gain = float(10 ** (-rng.uniform(1.0, 3.0) / 20.0))
        gains = {name: (1.0 if name == reference else thigh_gain) for name in names}
    ref = mics[reference]
    n = ref.shape[0]
    half = int(round(noise_window_s * rate_hz))
    events: list[ClickEvent] = []
    for onset in onsets_s:  # a handful of events; each is vectorized over its samples
        i0 = int(round(onset * rate_hz))
        freq = float(rng.uniform(2000.0, 5000.0))
        tau = float(rng.uniform(0.5e-3, 1.0e-3))
        snr = float(rng.uniform(*snr_db_range))
        w = click_waveform(freq, tau, rng, rate_hz)
        floor_rms = float(np.sqrt(np.mean(ref[max(i0 - half, 0) : i0 + half] ** 2)))
        peak = floor_rms * 10 ** (snr / 20.0)
        m = min(w.shape[0], n - i0)
        for name in names:
            mics[name][i0 : i0 + m] += gains[name] * peak * w[:m]
        events.append(
            ClickEvent(
                onset_index=i0,
                onset_s=i0 / rate_hz,
                end_s=i0 / rate_hz + tau * np.log(100.0),
                freq_hz=freq,
                tau_s=tau,
                snr_db=snr,
                peak_fs={name: gains[name] * peak for name in names},
            )
        )
    return events
