"""Contact-microphone model at 16 kHz: background sources (noise floor, muscle rumble, mains hum, cloth/skin
rubbing, impact thuds) and the first cavitation-click model.

Values are in full-scale units (FS, int16 full scale = 1.0, |x| < 1). Both sensors sit close to the knee,
so each click is added to both: same waveform, same onset sample; the thigh copy is a few dB quieter.
The true arrival-time difference (a few cm of soft tissue at ~1500 m/s, i.e. tens of microseconds, below
one 62.5 us sample) is neglected.

:func:`add_clicks` / :func:`place_click_times` are the squat session's first click model (clicks anywhere in
descents/ascents, no refractory period). The full joint-sound model (cavitation with its ~20 min refractory
period, tendon snaps tied to a joint angle, crepitus over a range of motion, SNR defined on 1 ms energy) is
:mod:`firmware_sim.joint_sounds`, which builds on the background sources here.
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
    hum_fs: float = 0.0004  # 50 Hz mains pickup amplitude (peak)
    # (harmonic number, amplitude relative to the 50 Hz line); the default keeps the first model's 150 Hz line
    hum_harmonics: tuple[tuple[int, float], ...] = ((3, 0.3),)


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
    ph = rng.uniform(0.0, 2.0 * np.pi, 1 + len(model.hum_harmonics))
    hum = np.sin(2 * np.pi * MAINS_HZ * t + ph[0])
    for (k, rel), phase in zip(model.hum_harmonics, ph[1:], strict=True):
        hum = hum + rel * np.sin(2 * np.pi * k * MAINS_HZ * t + phase)
    return floor + rumble + model.hum_fs * hum


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


# ---------------------------------------------------------------- impacts and rubbing (background, never labelled)

IMPACT_FS_PER_G = 0.02  # thud peak (FS) per g of impact peak acceleration, at impact_gain 1 and 0 dB sensor gain
RUB_FS = 0.006  # rubbing RMS (FS) at the top of a burst, for rubbing level 1 and full activity
RUB_BURSTS_PER_MOVING_S = 1.0  # expected rubbing bursts per second of movement, at rubbing level 1
RUB_MIN_ACTIVITY = 0.15  # below this activity nothing moves against the sensor, so no rubbing
RUB_DURATION_S = (0.15, 0.8)  # burst length range; long and smooth, unlike any joint sound
RUB_BAND_HZ = (150.0, 6000.0)  # cloth/skin friction noise is broadband but not impulsive


def impact_waveform(rng: np.random.Generator, rate_hz: int = MIC_RATE_HZ) -> np.ndarray:
    """Unit-peak thud of a footstrike, landing or bar contact as a contact microphone hears it through the body.

    Three parts, all starting at sample 0 (the onset is sharp):

    * a broadband crack: white noise decaying in 0.3-1 ms. It is what makes an impact look like a click
      to an energy detector above 1 kHz, so impacts are a realistic false-alarm source that only the
      IMU (the simultaneous acceleration spike) can reject;
    * the limb's mid-frequency response: a 120-400 Hz resonance decaying in 3-10 ms;
    * the thud: a 25-80 Hz soft-tissue/limb resonance decaying in 15-40 ms (lasts until 60 dB down).
    """
    f_thud, f_mid = rng.uniform(25.0, 80.0), rng.uniform(120.0, 400.0)
    tau_thud, tau_mid, tau_crack = rng.uniform(0.015, 0.040), rng.uniform(0.003, 0.010), rng.uniform(3e-4, 1e-3)
    a_mid, a_crack = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.7)
    n = int(np.ceil(tau_thud * np.log(1000.0) * rate_hz)) + 1
    t = np.arange(n) / rate_hz
    # Cosine phase: the thud starts at its maximum, i.e. a step-like (sharp) onset.
    w = np.exp(-t / tau_thud) * np.cos(2 * np.pi * f_thud * t)
    w += a_mid * np.exp(-t / tau_mid) * np.cos(2 * np.pi * f_mid * t + rng.uniform(-0.5, 0.5))
    n_crack = int(np.ceil(tau_crack * np.log(1000.0) * rate_hz)) + 1
    w[:n_crack] += a_crack * np.exp(-t[:n_crack] / tau_crack) * np.clip(rng.standard_normal(n_crack) / 2.5, -1, 1)
    return w / np.max(np.abs(w))


def rubbing_noise(
    activity: np.ndarray, level: float, rng: np.random.Generator, rate_hz: int = MIC_RATE_HZ
) -> np.ndarray:
    """Cloth/skin rubbing on one sensor (FS), one sample per ``activity`` value (0..1, at the mic rate).

    Bursts of broadband (150-6000 Hz) friction noise, each 0.15-0.8 s long under a Hann envelope: the
    level rises over tens of ms (smooth onset), never a transient. Bursts start only while
    ``activity >= RUB_MIN_ACTIVITY``, about ``level * RUB_BURSTS_PER_MOVING_S`` per second of movement;
    the burst RMS at its top is ``RUB_FS * level * lognormal(0, 0.4) * (0.5 + 0.5 * activity)``.
    ``level`` is 0..1 (0 gives zeros). Each sensor rubs on its own clothing: call once per sensor.
    """
    n = activity.shape[0]
    out = np.zeros(n)
    moving = np.flatnonzero(activity >= RUB_MIN_ACTIVITY)
    if level <= 0.0 or moving.size == 0:
        return out
    n_bursts = int(rng.poisson(level * RUB_BURSTS_PER_MOVING_S * moving.size / rate_hz))
    if n_bursts == 0:
        return out
    centres = moving[rng.integers(0, moving.size, n_bursts)]
    lengths = np.round(rng.uniform(*RUB_DURATION_S, n_bursts) * rate_hz).astype(int)
    peaks = RUB_FS * level * rng.lognormal(0.0, 0.4, n_bursts) * (0.5 + 0.5 * np.clip(activity[centres], 0.0, 1.0))
    envelope = np.zeros(n)
    for c, length, peak in zip(centres, lengths, peaks, strict=True):  # a few dozen bursts per minute
        i0 = max(int(c) - length // 2, 0)
        i1 = min(i0 + length, n)
        envelope[i0:i1] += peak * np.hanning(length)[: i1 - i0]
    sos = signal.butter(2, RUB_BAND_HZ, btype="bandpass", fs=rate_hz, output="sos")
    carrier = signal.sosfilt(sos, rng.standard_normal(n))
    carrier /= max(float(np.std(carrier)), 1e-12)  # unit RMS, so ``envelope`` is the local RMS
    return envelope * carrier
