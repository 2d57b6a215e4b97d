"""Joint sounds on the contact microphones: cavitation clicks, tendon snaps, crepitus, over a realistic background.

Entry point: :func:`synthesize_microphones` (the session composer calls it once per joint). It renders, per
sensor, the background (noise floor, muscle rumble, 50 Hz mains hum with harmonics, cloth/skin rubbing, the
thuds of the impacts it is given) and adds the joint's own sounds, each from its own mechanism
(``../shared/CLINICAL.md``), with one :class:`~firmware_sim.session.Label` per joint sound.

Signatures (what tells the three joint sounds apart, and what the background's false alarms look like):

=========  ============================  =========================  ==========================================
sound      duration                      spectrum                   repetition / angle
=========  ============================  =========================  ==========================================
click      one 0.3-1.2 ms decay; 30 %    2-6 kHz resonance + white  isolated: at most one per
           add a smaller 2nd pop 1-3 ms  noise: typically ~90 % of  ``click_refractory_s`` (default 1200 s);
           later. 90 % of the energy     energy above 2 kHz, never  during movement (activity >= 0.3), at
           within 0.3-3.5 ms of onset    below ~45 %                whatever angle the joint is at
snap       10-30 ms (central 90 % of     70-250 Hz thump + partial  at most once per rep (``probability``),
           energy), 1-3 ms soft rise,    at 1.6-2.0x, pitch glides  at the session's snap angle +-1.8 deg,
           exponential decay             5-15 % down: > 90 % of     on the crossing ``direction``; the IMU
                                         energy below 500 Hz        jerk is the composer's, from the label
crepitus   trains of 0.3-2 ms bursts,    each burst a 0.4-3 kHz     every rep, only while the angle is inside
           4-40 ms apart (gamma, mean    resonance + noise: ~80 %   ``range_deg`` and moving (>= 5 deg/s);
           30 ms - 22 ms * level),       above 1 kHz                the loudest burst is ~12-16 dB above the
           amplitude-modulated 1.5-5 Hz                             median one; louder when faster
impact     broadband crack 0.3-1 ms,     crack > 1 kHz, then 120-   at each impact time, every sensor (gain
           then a 100-280 ms thud        400 Hz and 25-80 Hz        -6..0 dB per sensor and session), peak
                                                                    ``impact_gain * 0.02 FS * peak_g``
rubbing    0.15-0.8 s Hann bursts        150-6000 Hz noise          during movement only; each sensor its own
=========  ============================  =========================  ==========================================

Signal-to-noise ratio (the ``snr_db`` setting and every label's ``magnitude``)::

    SNR_dB = 10 log10( max_t E_event(t) / P_background )

* ``E_event(t)``: short-time energy of the joint sound alone, the mean of x^2 over a 1 ms (16-sample)
  sliding window, on the reference sensor; for a crepitus train, its loudest burst.
* ``P_background``: mean of x^2 of the background alone (noise floor + rumble + hum + rubbing) on the
  reference sensor over the label's span widened by 100 ms on each side, i.e. the mean of its 1 ms
  short-time energy there. Impact thuds are discrete events, not background: a click next to a landing
  keeps its SNR and is simply harder to find, as in life.
* The SNR is broadband (no filter): a detector working in a band sees a different in-band SNR. At 0 dB
  a click's loudest millisecond carries as much energy as an average background millisecond, so it is
  below the background's own 1 ms peaks (noise alone reaches 4-6 dB above its mean within 100 ms).
* Reference sensor: the first of ``REFERENCE_SENSORS`` ("shank", "upper_arm": the sensors sitting right
  over the sound sources) present in ``sensors``, else ``sensors[0]``. It hears joint sounds at 0 dB; each
  other sensor at a per-session gain of -4..-1 dB (+-0.5 dB per event, never above 0 dB), same waveform,
  same sample (the few-cm soft-tissue path is tens of microseconds, below one sample).

Labels: ``t_start_s`` = onset sample time; ``t_end_s`` = when 95 % of the event's energy has arrived (click,
snap), or the last sample of the train's last burst (crepitus: one label per rep, spanning its train).

Randomness: ``rng`` is split into independent child streams (background per sensor, rubbing per sensor, impacts,
gains, clicks, snaps, crepitus), so enabling one sound leaves all other signals bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from firmware_sim.mic_model import (
    IMPACT_FS_PER_G,
    MIC_RATE_HZ,
    MicBackgroundModel,
    background,
    click_waveform,
    impact_waveform,
    place_click_times,
    rubbing_noise,
)
from jointmon.errors import ConfigError

if TYPE_CHECKING:
    from firmware_sim.session import Label

try:
    from firmware_sim.body_model import Impact
except ImportError:  # body_model lands in a parallel change; only ``t_s`` and ``peak_g`` are used here

    @dataclass(frozen=True)
    class Impact:  # type: ignore[no-redef]
        """A footstrike, landing or bar contact: time (s) and peak acceleration (g)."""

        t_s: float
        peak_g: float


__all__ = [
    "CrepitusSettings",
    "Impact",
    "SnapSettings",
    "SoundSettings",
    "activity_from_angular_rate",
    "measure_snr_db",
    "parse_sounds",
    "synthesize_microphones",
]


class ImpactLike(Protocol):
    """What :func:`synthesize_microphones` needs of an impact."""

    @property
    def t_s(self) -> float: ...

    @property
    def peak_g(self) -> float: ...


SNR_WINDOW_S = 1e-3  # short-time energy window of the SNR definition
SNR_CONTEXT_S = 0.1  # background is averaged over the label span widened by this on each side
REFERENCE_SENSORS = ("shank", "upper_arm")  # preferred reference sensors, in order
OTHER_SENSOR_GAIN_DB = (-4.0, -1.0)  # per-session gain of non-reference sensors for joint sounds
GAIN_JITTER_DB = 0.5  # per-event variation of that gain
IMPACT_SENSOR_GAIN_DB = (-6.0, 0.0)  # per-session, per-sensor gain for impacts (distance to the impact site)
RUMBLE_GAIN = (0.8, 1.3)  # per-sensor muscle-sound gain (how much muscle lies under the sensor)
# Mains pickup: 50 Hz plus the odd harmonics of rectifier loads and a little 2nd harmonic.
HUM_HARMONICS: tuple[tuple[int, float], ...] = ((2, 0.1), (3, 0.3), (5, 0.1))
ACTIVITY_RATE_REF_DPS = 80.0  # angular rate giving activity 1 - 1/e (0.63)
CLICK_MIN_ACTIVITY = 0.3  # clicks need the joint to be moving under load
CLICK_MIN_GAP_S = 0.25  # whatever the refractory setting, two clicks never share a +-100 ms SNR context
SNAP_ANGLE_JITTER_DEG = 0.7  # rep-to-rep spread of the snap angle (normal, clipped at +-1.8 deg)
CREPITUS_MIN_SPEED_DPS = 5.0  # grinding needs the surfaces to slide
CREPITUS_GAP_S = (0.004, 0.040)  # burst-to-burst interval limits
ENERGY_END_FRACTION = 0.95  # click/snap label ends when this fraction of the energy has arrived


# ---------------------------------------------------------------- settings ([sounds] table)


@dataclass(frozen=True)
class SnapSettings:
    """``[sounds.snaps]``: a tendon snapping over a bony prominence at one angle."""

    angle_deg: tuple[float, float]  # the session's snap angle is drawn uniformly in this range, degrees
    probability: float = 1.0  # chance per rep (and per crossing direction) that it snaps
    # on which crossing: angle "increasing" (knee: squat descent; shoulder: arm rising), "decreasing", "both"
    direction: str = "increasing"
    snr_db: tuple[float, float] | None = None  # overrides the table-level snr_db for snaps


@dataclass(frozen=True)
class CrepitusSettings:
    """``[sounds.crepitus]``: cartilage grinding over a range of motion."""

    range_deg: tuple[float, float]  # bursts only while the angle is inside, degrees
    level: float = 0.5  # roughness 0..1: mean burst interval 30 ms at 0 down to 8 ms at 1; 0 = no crepitus
    snr_db: tuple[float, float] | None = None  # overrides the table-level snr_db for crepitus


@dataclass(frozen=True)
class SoundSettings:
    """A validated ``[sounds]`` table. ``snr_db`` is a (lo, hi) range, drawn uniformly per event."""

    snr_db: tuple[float, float] = (20.0, 20.0)
    clicks: int = 0
    click_refractory_s: float = 1200.0
    snaps: SnapSettings | None = None
    crepitus: CrepitusSettings | None = None
    background_level: float = 1.0  # multiplies the white noise floor (2 mFS RMS)
    hum_level: float = 1.0  # multiplies the mains hum (0.4 mFS at 50 Hz)
    rubbing: float = 0.0  # cloth/skin rubbing 0..1 (0: none)
    impact_gain: float = 1.0  # multiplies every impact thud


_SNR_LIMITS_DB = (-40.0, 60.0)
_DIRECTIONS = ("increasing", "decreasing", "both")


def _fail(section: str, key: str, value: Any, should: str) -> ConfigError:
    return ConfigError(f"[{section}] {key} = {value!r}: should be {should}")


def _check_keys(section: str, table: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"[{section}] unknown key {key!r} (known: {', '.join(sorted(known))})")


def _number(section: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    # bool is an int subclass; "true" for a level is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(section, key, value, f"a number in [{lo}, {hi}]")
    return float(value)


def _pair(section: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _fail(section, key, value, "[lo, hi]")
    a, b = (_number(section, key, v, lo, hi) for v in value)
    if a > b:
        raise _fail(section, key, value, "[lo, hi] with lo <= hi")
    return a, b


def _snr(section: str, key: str, value: Any) -> tuple[float, float]:
    if isinstance(value, list | tuple):
        return _pair(section, key, value, *_SNR_LIMITS_DB)
    v = _number(section, key, value, *_SNR_LIMITS_DB)
    return v, v


def _table(section: str, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(section, key, value, "a table")
    return value


def _parse_snaps(table: Mapping[str, Any]) -> SnapSettings:
    sec = "sounds.snaps"
    _check_keys(sec, table, ("angle_deg", "probability", "direction", "snr_db"))
    if "angle_deg" not in table:
        raise ConfigError(f"[{sec}] angle_deg is required")
    direction = table.get("direction", "increasing")
    if direction not in _DIRECTIONS:
        raise _fail(sec, "direction", direction, " or ".join(repr(d) for d in _DIRECTIONS))
    return SnapSettings(
        angle_deg=_pair(sec, "angle_deg", table["angle_deg"], -360.0, 360.0),
        probability=_number(sec, "probability", table.get("probability", 1.0), 0.0, 1.0),
        direction=direction,
        snr_db=_snr(sec, "snr_db", table["snr_db"]) if "snr_db" in table else None,
    )


def _parse_crepitus(table: Mapping[str, Any]) -> CrepitusSettings:
    sec = "sounds.crepitus"
    _check_keys(sec, table, ("range_deg", "level", "snr_db"))
    if "range_deg" not in table:
        raise ConfigError(f"[{sec}] range_deg is required")
    return CrepitusSettings(
        range_deg=_pair(sec, "range_deg", table["range_deg"], -360.0, 360.0),
        level=_number(sec, "level", table.get("level", 0.5), 0.0, 1.0),
        snr_db=_snr(sec, "snr_db", table["snr_db"]) if "snr_db" in table else None,
    )


def parse_sounds(table: Mapping[str, Any]) -> SoundSettings:
    """Validate a scenario's ``[sounds]`` table ({} = defaults). Raises :class:`ConfigError` naming the key."""
    sec = "sounds"
    _table("scenario", sec, table)
    known = ("snr_db", "clicks", "click_refractory_s", "snaps", "crepitus",
             "background_level", "hum_level", "rubbing", "impact_gain")
    _check_keys(sec, table, known)
    clicks = table.get("clicks", 0)
    if isinstance(clicks, bool) or not isinstance(clicks, int) or clicks < 0:
        raise _fail(sec, "clicks", clicks, "an integer >= 0")
    return SoundSettings(
        snr_db=_snr(sec, "snr_db", table.get("snr_db", 20.0)),
        clicks=clicks,
        click_refractory_s=_number(sec, "click_refractory_s", table.get("click_refractory_s", 1200.0), 0.0),
        snaps=_parse_snaps(_table(sec, "snaps", table["snaps"])) if "snaps" in table else None,
        crepitus=_parse_crepitus(_table(sec, "crepitus", table["crepitus"])) if "crepitus" in table else None,
        background_level=_number(sec, "background_level", table.get("background_level", 1.0), 0.0, 100.0),
        hum_level=_number(sec, "hum_level", table.get("hum_level", 1.0), 0.0, 100.0),
        rubbing=_number(sec, "rubbing", table.get("rubbing", 0.0), 0.0, 1.0),
        impact_gain=_number(sec, "impact_gain", table.get("impact_gain", 1.0), 0.0, 100.0),
    )


# ---------------------------------------------------------------- SNR definition


def short_time_energy(x: np.ndarray, rate_hz: float = MIC_RATE_HZ) -> np.ndarray:
    """Mean of x^2 (FS^2) over a sliding ``SNR_WINDOW_S`` (1 ms) window, zero outside ``x`` ("full" length)."""
    n = max(1, round(SNR_WINDOW_S * rate_hz))
    return np.convolve(x * x, np.full(n, 1.0 / n), mode="full")


def measure_snr_db(
    event: np.ndarray, background_sig: np.ndarray, i_start: int, i_end: int, rate_hz: float = MIC_RATE_HZ
) -> float:
    """SNR (dB) of ``event`` (the joint sound alone) over ``background_sig`` (background alone), both on the
    reference sensor and the same length, for a label spanning samples ``i_start..i_end``: the definition in
    the module docstring, for analysis code and tests to measure what the labels claim."""
    ctx = round(SNR_CONTEXT_S * rate_hz)
    lo, hi = max(i_start - ctx, 0), min(i_end + ctx + 1, background_sig.shape[0])
    e_peak = float(np.max(short_time_energy(event[lo:hi], rate_hz)))
    p_bg = float(np.mean(background_sig[lo:hi] ** 2))
    return 10.0 * math.log10(e_peak / p_bg)


# ---------------------------------------------------------------- waveforms


def snap_waveform(
    f0_hz: float,
    tau_s: float,
    attack_s: float,
    partial_ratio: float,
    partial_amp: float,
    glide: float,
    rng: np.random.Generator,
    rate_hz: int = MIC_RATE_HZ,
) -> np.ndarray:
    """Unit-peak tendon snap: a plucked-band thump at ``f0_hz`` (s: ``tau_s`` decay, ``attack_s`` rise).

    A raised-cosine rise (the band flicking over the bone is not instantaneous, unlike a cavitation), then an
    exponential decay; a partial at ``partial_ratio * f0_hz`` (relative amplitude ``partial_amp``) decays
    faster; the pitch starts ``glide`` (fraction) high and settles as the tendon comes to rest. Lasts until
    the envelope is 60 dB down.
    """
    n = int(np.ceil((attack_s + tau_s * np.log(1000.0)) * rate_hz)) + 1
    t = np.arange(n) / rate_hz
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / attack_s, 0.0, 1.0))
    env = rise * np.exp(-np.maximum(t - attack_s, 0.0) / tau_s)
    # Phase of a frequency f0 * (1 + glide * exp(-t / tau)), integrated analytically.
    phase = 2 * np.pi * f0_hz * (t + glide * tau_s * (1.0 - np.exp(-t / tau_s))) + rng.uniform(0, 2 * np.pi)
    w = env * (np.sin(phase) + partial_amp * np.exp(-t / tau_s) * np.sin(partial_ratio * phase + rng.uniform(0, 6.3)))
    return w / np.max(np.abs(w))


def crepitus_bursts(
    lengths: np.ndarray, amplitudes: np.ndarray, rng: np.random.Generator, rate_hz: int = MIC_RATE_HZ
) -> np.ndarray:
    """Grinding bursts, one row each ((k, max(lengths)) FS): a 0.4-3 kHz resonance plus white noise under a
    Hann envelope of ``lengths[i]`` samples, peak envelope ``amplitudes[i]``; zero past each length."""
    k, width = lengths.shape[0], int(lengths.max(initial=1))
    j = np.arange(width)[None, :]
    L = lengths[:, None].astype(float)
    env = np.where(j < L, np.sin(np.pi * (j + 0.5) / L) ** 2, 0.0)
    f = np.exp(rng.uniform(np.log(400.0), np.log(3000.0), (k, 1)))  # log-uniform: each asperity rings its own way
    tone = np.sin(2 * np.pi * f * j / rate_hz + rng.uniform(0, 2 * np.pi, (k, 1)))
    return amplitudes[:, None] * env * (0.6 * tone + 0.8 * rng.standard_normal((k, width)))


def activity_from_angular_rate(rate_dps: np.ndarray) -> np.ndarray:
    """Movement intensity 0..1 from a joint's angular rate (deg/s, any shape): ``1 - exp(-|rate| / 80 dps)``.

    0 at rest, 0.39 at 40 dps, 0.73 at a brisk 105 dps squat, 0.98 at 300 dps. Elementwise: smooth a noisy
    gyro-derived rate first (muscle activity changes over tens of ms, not per sample).
    """
    return 1.0 - np.exp(-np.abs(rate_dps) / ACTIVITY_RATE_REF_DPS)


# ---------------------------------------------------------------- events


@dataclass
class _Event:
    """A joint sound before scaling: unit waveform on the reference sensor at ``i0``."""

    type: str
    i0: int  # onset sample
    wave: np.ndarray  # reference-sensor waveform (any scale; rescaled to the drawn SNR)
    end_offset: int  # label end, samples after i0
    snr_db: float
    jitter_db: np.ndarray  # per-sensor gain variation, dB


def _energy_end(w: np.ndarray) -> int:
    c = np.cumsum(w * w)
    return int(np.searchsorted(c, ENERGY_END_FRACTION * c[-1]))


def _runs(mask: np.ndarray) -> np.ndarray:
    """(k, 2) [start, end) sample indices of the True runs of ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return edges.reshape(-1, 2)


def _click_events(
    s: SoundSettings, t: np.ndarray, activity: np.ndarray, n_sensors: int, rate: int, rng: np.random.Generator
) -> list[_Event]:
    if s.clicks == 0:
        return []
    runs = _runs(activity >= CLICK_MIN_ACTIVITY)
    intervals = np.column_stack((t[runs[:, 0]], t[runs[:, 1] - 1])) if runs.size else np.empty((0, 2))
    # The refractory period is the minimum spacing: a joint that just cavitated has no gas nucleus left.
    onsets = place_click_times(intervals, s.clicks, rng, min_separation_s=max(s.click_refractory_s, CLICK_MIN_GAP_S))
    events = []
    for onset in onsets:  # loop over events; each waveform is vectorised
        w = click_waveform(rng.uniform(2000.0, 6000.0), rng.uniform(3e-4, 1.2e-3), rng, rate)
        if rng.random() < 0.3:  # a second, smaller pop 1-3 ms later (bubble collapse and re-expansion)
            w2 = rng.uniform(0.2, 0.5) * click_waveform(rng.uniform(2000.0, 6000.0), rng.uniform(3e-4, 8e-4), rng, rate)
            lag = round(rng.uniform(1e-3, 3e-3) * rate)
            w = np.concatenate((w, np.zeros(max(lag + w2.size - w.size, 0))))
            w[lag : lag + w2.size] += w2
        events.append(_Event("click", int(np.searchsorted(t, onset)), w, _energy_end(w),
                             float(rng.uniform(*s.snr_db)), rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB, n_sensors)))
    return events


def _snap_events(
    cfg: SnapSettings, snr_db: tuple[float, float], angle: np.ndarray, rep_idx: np.ndarray, n_sensors: int,
    rate: int, rng: np.random.Generator,
) -> list[_Event]:
    # One tendon, one bony prominence: the snap angle and the tendon's resonance are properties of the session.
    snap_angle = rng.uniform(*cfg.angle_deg)
    f0, tau = rng.uniform(70.0, 250.0), rng.uniform(0.008, 0.016)
    ratio, partial = rng.uniform(1.6, 2.0), rng.uniform(0.15, 0.4)
    signs = {"increasing": (1.0,), "decreasing": (-1.0,), "both": (1.0, -1.0)}[cfg.direction]
    events = []
    for i0, i1 in rep_idx:  # loop over reps
        for sign in signs:
            snaps = rng.random() < cfg.probability
            theta = snap_angle + float(np.clip(rng.normal(0.0, SNAP_ANGLE_JITTER_DEG), -1.8, 1.8))
            seg = sign * angle[i0:i1]
            k = np.flatnonzero((seg[:-1] < sign * theta) & (seg[1:] >= sign * theta))
            if not snaps or k.size == 0:  # a rep that never reaches the angle cannot snap
                continue
            w = snap_waveform(f0 * rng.uniform(0.95, 1.05), tau * rng.uniform(0.87, 1.15), rng.uniform(1e-3, 3e-3),
                              ratio, partial, rng.uniform(0.05, 0.15), rng, rate)
            events.append(_Event("snap", int(i0 + k[0] + 1), w, _energy_end(w), float(rng.uniform(*snr_db)),
                                 rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB, n_sensors)))
    return events


def _crepitus_events(
    cfg: CrepitusSettings, snr_db: tuple[float, float], angle: np.ndarray, rep_idx: np.ndarray, n_sensors: int,
    rate: int, rng: np.random.Generator,
) -> list[_Event]:
    if cfg.level <= 0.0:
        return []
    lo, hi = cfg.range_deg
    mean_gap = 0.030 - 0.022 * cfg.level  # rougher cartilage: more asperities per degree
    shape = 2.5  # gamma shape: irregular (CV 0.63) but with a typical spacing
    events = []
    for i0, i1 in rep_idx:  # loop over reps; the bursts of a train are vectorised
        seg = angle[i0:i1]
        if seg.size < 2:
            continue
        speed = np.abs(np.gradient(seg)) * rate
        active = (seg >= lo) & (seg <= hi) & (speed >= CREPITUS_MIN_SPEED_DPS)
        act = np.flatnonzero(active)
        if act.size == 0:
            continue
        # Burst times on the "active clock" (time spent sliding inside the range), then mapped to samples.
        n_max = int(act.size / (CREPITUS_GAP_S[0] * rate)) + 2
        gaps = np.clip(rng.gamma(shape, mean_gap / shape, n_max), *CREPITUS_GAP_S)
        pos = rng.uniform(0.0, 1.0) * gaps[0] + np.concatenate(([0.0], np.cumsum(gaps[1:])))
        pos = pos[pos * rate < act.size]
        onsets = act[(pos * rate).astype(int)]
        lengths = np.round(rng.uniform(3e-4, 2e-3, onsets.size) * rate).astype(int).clip(min=5)
        # Bursts end inside the range too (no grinding once the angle has left it or the joint stopped).
        ends = onsets + lengths - 1
        keep = (ends < seg.size) & active[np.minimum(ends, seg.size - 1)]
        onsets, lengths = onsets[keep], lengths[keep]
        if onsets.size == 0:
            continue
        # Amplitude: faster sliding grinds louder, slow modulation (load, patellar tracking) and per-asperity spread.
        f_mod, ph_mod = rng.uniform(1.5, 5.0), rng.uniform(0, 2 * np.pi)
        amp = (
            (0.4 + 0.6 * np.clip(speed[onsets] / 60.0, 0.0, 1.0))
            * (1.0 + 0.5 * np.sin(2 * np.pi * f_mod * onsets / rate + ph_mod))
            * rng.lognormal(0.0, 0.35, onsets.size)
        )
        bursts = crepitus_bursts(lengths, amp, rng, rate)
        first = int(onsets[0])
        train = np.zeros(int(onsets[-1]) - first + bursts.shape[1])
        idx = (onsets - first)[:, None] + np.arange(bursts.shape[1])[None, :]
        np.add.at(train, idx, bursts)
        end_offset = int(onsets[-1] + lengths[-1] - 1) - first
        events.append(_Event("crepitus", int(i0 + first), train, end_offset, float(rng.uniform(*snr_db)),
                             rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB, n_sensors)))
    return events


def _reference(sensors: Sequence[str]) -> int:
    for name in REFERENCE_SENSORS:
        if name in sensors:
            return list(sensors).index(name)
    return 0


def synthesize_microphones(
    t_mic_s: np.ndarray,
    angle_deg: np.ndarray,
    activity: np.ndarray,
    reps: Sequence[tuple[float, float]],
    impacts: Sequence[ImpactLike],
    sounds: Mapping[str, Any],
    sensors: Sequence[str],
    joint: str,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], list[Label]]:
    """Microphone signals (FS, float64, one (m,) array per sensor) and the joint-sound labels of one joint.

    ``t_mic_s`` (m,): uniform mic sample times, s (16 kHz); ``angle_deg`` (m,): the joint's main angle (knee
    flexion / shoulder elevation), degrees; ``activity`` (m,): movement intensity 0..1 (muscle rumble and
    rubbing follow it; clicks happen where it is >= 0.3), see :func:`activity_from_angular_rate`; ``reps``:
    (start_s, end_s) of each rep (snaps and crepitus are looked for inside reps only); ``impacts``: thuds to
    add (time s, peak g), heard on every sensor and never labelled; ``sounds``: the scenario's ``[sounds]``
    table, see :func:`parse_sounds` and :class:`SoundSettings`; ``sensors``: names of the joint's sensors.

    Clicks honour ``click_refractory_s`` (default 1200 s: at most one click per session of under 20 min, as
    in the physiology); benchmark scenarios set a shorter one to collect enough events. Fewer than ``clicks``
    are placed when they do not fit. Labels are sorted by onset; magnitude = SNR in dB (module docstring).
    Signals are not clipped: everything stays well inside +-1 FS except deliberately huge impacts (~50 g).
    """
    from firmware_sim.session import Label  # here, not at the top: session.py imports this module

    settings = parse_sounds(sounds)
    m = t_mic_s.shape[0]
    if angle_deg.shape != (m,) or activity.shape != (m,):
        raise ValueError(f"t_mic_s, angle_deg and activity must have the same shape (m,): "
                         f"{t_mic_s.shape}, {angle_deg.shape}, {activity.shape}")
    if not sensors or m == 0:
        return {name: np.zeros(m) for name in sensors}, []
    rate = round((m - 1) / (t_mic_s[-1] - t_mic_s[0])) if m > 1 else MIC_RATE_HZ
    r_bg, r_rub, r_imp, r_gain, r_click, r_snap, r_crep = rng.spawn(7)

    model = MicBackgroundModel()
    model = replace(model, noise_floor_fs=model.noise_floor_fs * settings.background_level,
                    hum_fs=model.hum_fs * settings.hum_level, hum_harmonics=HUM_HARMONICS)
    mics: dict[str, np.ndarray] = {}
    for name, r_b, r_r in zip(sensors, r_bg.spawn(len(sensors)), r_rub.spawn(len(sensors)), strict=True):
        x = background(r_b.uniform(*RUMBLE_GAIN) * activity, r_b, model, rate)
        if settings.rubbing > 0.0:
            x += rubbing_noise(activity, settings.rubbing, r_r, rate)
        mics[name] = x

    ref = _reference(sensors)
    # Prefix sums of the reference background power: each event's +-100 ms mean in O(1).
    bg_cum = np.concatenate(([0.0], np.cumsum(mics[sensors[ref]] ** 2)))
    gain_db = r_gain.uniform(*OTHER_SENSOR_GAIN_DB, len(sensors))
    gain_db[ref] = 0.0

    rep_idx = np.searchsorted(t_mic_s, np.asarray(reps, dtype=float).reshape(-1, 2))
    events = _click_events(settings, t_mic_s, activity, len(sensors), rate, r_click)
    if settings.snaps is not None:
        events += _snap_events(settings.snaps, settings.snaps.snr_db or settings.snr_db, angle_deg, rep_idx,
                               len(sensors), rate, r_snap)
    if settings.crepitus is not None:
        events += _crepitus_events(settings.crepitus, settings.crepitus.snr_db or settings.snr_db, angle_deg,
                                   rep_idx, len(sensors), rate, r_crep)

    ctx = round(SNR_CONTEXT_S * rate)
    labels: list[Label] = []
    for ev in sorted(events, key=lambda e: e.i0):  # loop over events
        w = ev.wave[: m - ev.i0]
        i_end = min(ev.i0 + ev.end_offset, m - 1)
        lo, hi = max(ev.i0 - ctx, 0), min(i_end + ctx + 1, m)
        p_bg = (bg_cum[hi] - bg_cum[lo]) / (hi - lo)
        e_peak = float(np.max(short_time_energy(w, rate)))
        if e_peak <= 0.0:  # a snap cut off by the end of the session before its rise
            continue
        scale = math.sqrt(p_bg * 10 ** (ev.snr_db / 10) / e_peak)
        g = 10 ** (np.minimum(gain_db + ev.jitter_db, 0.0) / 20)
        g[ref] = 1.0
        for k, name in enumerate(sensors):
            mics[name][ev.i0 : ev.i0 + w.size] += g[k] * scale * w
        labels.append(Label(type=ev.type, joint=joint, t_start_s=float(t_mic_s[ev.i0]),
                            t_end_s=float(t_mic_s[i_end]), magnitude=ev.snr_db))

    imp_gain = 10 ** (r_imp.uniform(*IMPACT_SENSOR_GAIN_DB, len(sensors)) / 20)
    for imp in impacts:  # loop over impacts
        i0 = int(np.searchsorted(t_mic_s, imp.t_s))
        if imp.t_s < t_mic_s[0] or i0 >= m:  # outside this recording
            continue
        w = impact_waveform(r_imp, rate)[: m - i0] * (settings.impact_gain * IMPACT_FS_PER_G * imp.peak_g)
        for k, name in enumerate(sensors):
            mics[name][i0 : i0 + w.size] += imp_gain[k] * w
    return mics, labels
