"""Transients in one contact-microphone stream: streaming short-time spectra, CFAR whitening, peak picking.

Why this shape (and why hand-written): a joint sound is short against a background that is loud but changes
slowly on the scale of the sound (muscle rumble rising with load, mains hum, cloth rubbing over 0.15-0.8 s).
So each short-time spectrum bin is compared with the same bin's level in the frames around it (a
cell-averaging CFAR detector, as in radar: reference frames on both sides, a guard gap around the cell under
test). The reference is a geometric mean (mean of dB), so other transients in the reference window barely move
it. Hum and rumble are stationary per bin and whiten away; rubbing rises over tens of ms and is followed.
librosa / aubio onset functions are whole-buffer or fixed-hop spectral-flux detectors without per-bin
two-sided whitening, which is what reaches 0 dB SNR here (``bench/sound_peers.py`` compares them).

Three triggers on two spectrograms (bands with the same framing and CFAR window share one spectrogram and
one reference, computed once):

* ``high`` and ``mid``: 2 ms Hann frames every 0.5 ms (500 Hz bins); the statistic is the mean whitened
  power over 1.8-6.5 kHz (clicks, impact cracks), resp. 0.4-3 kHz (crepitus bursts). Each also reports
  ``lf_db``, the whitened power of the 0-500 Hz bins over the next few ms: an impact's crack comes with the
  limb's thud (25-400 Hz, far louder than the crack), a joint click or crepitus burst has no such tail.
* ``low``: 16 ms frames every 4 ms (62.5 Hz bins); the mean whitened power over 60-320 Hz (tendon snaps
  at 70-250 Hz, impact thuds).

Streaming: frames need ``ref_s`` of spectra on both sides, so output lags input by that much; the state is the
unframed tail of samples and the last frames' log spectra. Whole signal or 50 ms blocks give the same
transients (the moving sums restart per block, so levels agree to ~1e-9 dB, not bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EPS = 1e-20
_DB = 10.0 / np.log(10.0)  # natural log of a power ratio -> dB
LF_BAND_HZ = (0.0, 500.0)  # the bins an impact's thud fills in 2 ms frames (a joint click or burst barely does)
LF_AFTER_S = 0.006  # the thud's 120-400 Hz knock rings 3-10 ms: look this far past the burst's peak frame, s
LF_SKIP_S = 0.002  # ... but only from this far on: a 2 ms frame no longer holds a short burst, s


@dataclass(frozen=True)
class BandSettings:
    """One spectrogram and its detection statistic(s)."""

    frame_len: int  # samples per FFT frame at 16 kHz (scaled to keep its duration at other rates)
    hop: int  # samples between frames at 16 kHz (scaled likewise)
    bands_hz: tuple[tuple[float, float], ...]  # statistic bands; the first one triggers candidates
    ref_s: float  # CFAR reference half-width, s
    guard_s: float  # CFAR guard half-width (excluded around the frame under test), s
    threshold_db: float  # candidate when the trigger statistic exceeds this, dB above the local level
    peak_window_s: float  # a candidate is the largest statistic within +- this, s


@dataclass(frozen=True)
class TransientSettings:
    """Both bands, at ``rate_hz`` (Hz)."""

    rate_hz: float = 16000.0
    # High band: triggers on 1.8-6.5 kHz (cavitation clicks, impact cracks); also reports 0.4-3 kHz (crepitus).
    high: BandSettings = BandSettings(32, 8, ((1800.0, 6500.0), (400.0, 3000.0)), 0.030, 0.003, 8.0, 0.004)
    # Mid trigger: crepitus bursts (0.4-3 kHz), a second detector on the same spectrogram.
    mid: BandSettings = BandSettings(32, 8, ((400.0, 3000.0), (1800.0, 6500.0)), 0.030, 0.003, 8.0, 0.004)
    # Low band: snaps and thuds (70-250 Hz with partials up to 500 Hz).
    # 100 ms of reference each side: rumble and hum are stationary over it, and it bounds the lag (~150 ms).
    low: BandSettings = BandSettings(256, 64, ((60.0, 320.0), (20.0, 90.0)), 0.100, 0.040, 6.0, 0.030)


@dataclass(frozen=True, slots=True)
class Transient:
    """One candidate: ``index`` = stream sample index (since the stream started) of the peak frame's centre."""

    band: str  # "high" | "mid" | "low"
    index: int
    level_db: float  # trigger statistic: mean whitened power over the trigger band, dB above the local level
    other_db: float  # the same statistic over the band's second band, dB
    width_s: float  # time the trigger statistic stays within 6 dB of its peak, s
    hf_fraction: float  # excess power above 2 kHz / excess power 0.4-7 kHz at the peak frame (high/mid), else 0
    lf_db: float = 0.0  # high/mid: max 0-500 Hz whitened power LF_SKIP_S..LF_AFTER_S after the peak, dB


@dataclass
class _Trigger:
    """One detection statistic on a shared spectrogram."""

    name: str
    s: BandSettings
    masks: list[np.ndarray]  # trigger band, second band
    k: int  # peak half-window, frames
    last_peak: int = -(10**9)  # frame number of the last candidate


@dataclass
class _Spectrogram:
    """One framing (frame length, hop, CFAR window) and the triggers computed on it; streaming state inside."""

    frame_len: int
    hop: int
    rate_hz: float
    window: np.ndarray
    hf_mask: np.ndarray
    wide_mask: np.ndarray
    lf_mask: np.ndarray
    r: int  # CFAR reference half-width, frames
    g: int  # CFAR guard half-width, frames
    n_lf: int  # frames after the peak searched for the thud tail (high/mid), frames
    n_skip: int  # frames after the peak before the thud search starts, frames
    triggers: list[_Trigger]
    dft: np.ndarray  # (frame_len, 2 * bins) windowed cos | -sin columns of the used bins
    bins: np.ndarray  # the rfft bins the statistics use (the masks above index these)
    means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (bins, stats): band-mean weights
    ext: int = 0  # frames of statistic needed on each side of a decided frame (peak window, thud tail)
    min_threshold: float = 0.0  # the lowest trigger threshold, as a linear power ratio
    context: int = 0  # frames needed on each side of a frame before it can be decided (CFAR reference + ext)
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hist: np.ndarray | None = None  # (frames, bins) log power, the frames kept for context
    csum: np.ndarray = field(default_factory=lambda: np.zeros((1, 0)))  # csum[i] = sum of hist[:i], dB
    hist_first: int = 0  # frame number of hist[0]
    next_frame: int = 0  # frame number of the first frame not yet decided

    @classmethod
    def build(cls, named: list[tuple[str, BandSettings]], rate_hz: float) -> _Spectrogram:
        # Frame sizes are given at 16 kHz: keep their durations at other rates.
        scale = rate_hz / 16000.0
        b0 = named[0][1]
        frame_len, hop = max(8, round(b0.frame_len * scale)), max(1, round(b0.hop * scale))
        f = np.fft.rfftfreq(frame_len, 1.0 / rate_hz)
        frame_rate = rate_hz / hop
        triggers = [_Trigger(name, b, [(f >= lo) & (f <= hi) for lo, hi in b.bands_hz],
                             max(1, round(b.peak_window_s * frame_rate))) for name, b in named]
        lf = (f >= LF_BAND_HZ[0]) & (f <= LF_BAND_HZ[1])
        hf, wide = (f >= 2000.0) & (f <= 7000.0), (f >= 400.0) & (f <= 7000.0)
        # Only the bins some statistic reads are computed, as one matrix product with their windowed DFT
        # columns (the low band reads 5 of its 129 bins: ~20x cheaper than the whole FFT; same values).
        used = np.logical_or.reduce([m for t in triggers for m in t.masks]
                                    + ([hf, wide, lf] if any(t.name != "low" for t in triggers) else []))
        bins = np.flatnonzero(used)
        window = np.hanning(frame_len + 2)[1:-1]
        ang = 2.0 * np.pi * np.outer(np.arange(frame_len), bins) / frame_len
        dft = np.hstack((window[:, None] * np.cos(ang), -window[:, None] * np.sin(ang)))
        for t in triggers:
            t.masks = [m[bins] for m in t.masks]
        return cls(frame_len, hop, rate_hz, window, hf[bins], wide[bins], lf[bins],
                   max(2, round(b0.ref_s * frame_rate)), max(1, round(b0.guard_s * frame_rate)),
                   max(0, round(LF_AFTER_S * frame_rate)),
                   max(0, round(LF_SKIP_S * frame_rate)), triggers, dft, bins)

    def __post_init__(self) -> None:
        # One matrix product gives every per-frame band mean: each trigger band, then the thud (0-500 Hz) band.
        cols = [t.masks[0] for t in self.triggers] + [self.lf_mask]
        self.means = np.stack([m / max(m.sum(), 1) for m in cols], axis=1)
        self.ext = max(max(t.k for t in self.triggers), self.n_lf)
        self.min_threshold = 10.0 ** (min(t.s.threshold_db for t in self.triggers) / 10.0)
        self.context = self.r + self.ext


def band_lag_s(b: BandSettings) -> float:
    """How long (s) after a frame's centre the band's transients for it come out: the CFAR reference, the peak
    window (or the thud tail) and the frame itself."""
    frame_rate = 16000.0 / b.hop  # frame sizes are given at 16 kHz and keep their durations at other rates
    ext = max(round(b.peak_window_s * frame_rate), round(LF_AFTER_S * frame_rate))
    return (max(2, round(b.ref_s * frame_rate)) + ext + 1) / frame_rate + 0.5 * b.frame_len / 16000.0


class TransientDetector:
    """``process(x)``: next block of samples (full scale) -> transients whose context is complete.

    ``flush()`` at the end of the stream decides the last frames (the missing future is the last frame
    repeated). Results do not depend on how the signal is cut into blocks."""

    def __init__(self, settings: TransientSettings | None = None) -> None:
        self.settings = settings or TransientSettings()
        s = self.settings
        # Triggers with the same framing and CFAR window share one spectrogram (high + mid: half the FFTs).
        groups: dict[tuple, list[tuple[str, BandSettings]]] = {}
        for name, b in (("high", s.high), ("mid", s.mid), ("low", s.low)):
            groups.setdefault((b.frame_len, b.hop, b.ref_s, b.guard_s), []).append((name, b))
        self._specs = [_Spectrogram.build(named, s.rate_hz) for named in groups.values()]
        self._seen = 0

    @property
    def samples_seen(self) -> int:
        return self._seen

    @property
    def lag_s(self) -> float:
        """How far (s) the decided transients trail the input: the slowest spectrogram's context."""
        return max((sp.context + 1) * sp.hop / sp.rate_hz + sp.frame_len / sp.rate_hz for sp in self._specs)

    def process(self, x: np.ndarray) -> list[Transient]:
        x = np.asarray(x, dtype=float).ravel()
        self._seen += x.size
        out: list[Transient] = []
        for sp in self._specs:
            out += self._run(sp, x, final=False)
        return sorted(out, key=lambda t: (t.index, t.band))

    def flush(self) -> list[Transient]:
        out: list[Transient] = []
        for sp in self._specs:
            out += self._run(sp, np.zeros(0), final=True)
        return sorted(out, key=lambda t: (t.index, t.band))

    def _frames(self, b: _Spectrogram, x: np.ndarray) -> np.ndarray:
        """Log power spectra (natural log) of the complete new frames."""
        buf = np.concatenate((b.tail, x))
        n, hop = b.frame_len, b.hop
        nfr = (buf.size - n) // hop + 1 if buf.size >= n else 0
        if nfr <= 0:
            b.tail = buf
            return np.zeros((0, b.bins.size))
        # A strided view: frame i is buf[i * hop: i * hop + n] (no copy; buf is a fresh contiguous array).
        frames = np.ndarray((nfr, n), buf.dtype, buf, 0, (hop * buf.itemsize, buf.itemsize))
        b.tail = buf[nfr * hop:]
        ri = frames @ b.dft
        ri *= ri
        k = b.bins.size
        # Natural log of the power: the statistics stay in log units until they are reported (in dB).
        return np.log(ri[:, :k] + ri[:, k:] + _EPS)

    def _run(self, b: _Spectrogram, x: np.ndarray, final: bool) -> list[Transient]:
        new = self._frames(b, x)
        if b.hist is None:
            if not new.shape[0]:
                return []
            # Start of stream: the past is the first frame repeated (no look-back exists yet).
            b.hist = np.repeat(new[:1], b.context, axis=0)
            b.hist_first = -b.context
            b.csum = np.concatenate((np.zeros((1, new.shape[1])), np.cumsum(b.hist, axis=0)))
        hist = np.concatenate((b.hist, new))
        # Cumulative sums of the log spectra carried along (only the new frames are summed each block).
        csum = np.concatenate((b.csum, b.csum[-1] + np.cumsum(new, axis=0)))
        last_real = b.hist_first + hist.shape[0] - 1
        if final:  # end of stream: the future is the last frame repeated
            pad = np.repeat(hist[-1:], b.context, axis=0)
            hist = np.concatenate((hist, pad))
            csum = np.concatenate((csum, csum[-1] + np.cumsum(pad, axis=0)))
            last_decidable = last_real - b.r  # frames whose reference would be mostly padding are not decided
        else:
            last_decidable = last_real - b.context
        out: list[Transient] = []
        if last_decidable >= b.next_frame:
            out = self._decide(b, hist, csum, b.next_frame, last_decidable + 1)
            b.next_frame = last_decidable + 1
        keep_from = max(b.next_frame - b.context - b.hist_first, 0)
        b.hist = hist[keep_from:]
        b.csum = csum[keep_from:] - csum[keep_from]  # re-based: the sums stay small (no drift over hours)
        b.hist_first += keep_from
        return out

    def _decide(self, b: _Spectrogram, hist: np.ndarray, csum: np.ndarray, f0: int, f1: int) -> list[Transient]:
        """Decide frames ``f0 .. f1 - 1`` (frame numbers); ``hist`` holds frames ``b.hist_first ..`` (dB),
        ``csum[i]`` the sum of ``hist[:i]``."""
        e, r, g = b.ext, b.r, b.g
        i0, i1 = f0 - b.hist_first, f1 - b.hist_first
        a, n = i0 - e - r, (i1 - i0) + 2 * (e + r)  # the frames used: hist[a:a + n]
        m = n - 2 * r  # frames with a whitened spectrum: f0 - e .. f1 + e - 1
        c = csum[a:a + n + 1]
        seg = hist[a:a + n]
        # Two-sided reference: mean of dB over [i-r, i-g) and (i+g, i+r], from the cumulative sum.
        ref = c[r - g + 1:r - g + 1 + m] - c[:m]
        ref += c[2 * r + 1:2 * r + 1 + m]
        ref -= c[r + g:r + g + m]
        ref *= 1.0 / (2 * (r - g + 1))
        lin = np.exp(seg[r:r + m] - ref)  # whitened power (linear): power over the reference's geometric mean
        means = lin @ b.means  # (frames, triggers + 1): band means, linear
        nt = len(b.triggers)
        if means[e:e + (f1 - f0), :nt].max() < b.min_threshold:  # most blocks: nothing to decide
            return []
        core = np.arange(e, e + (f1 - f0))
        stats = _DB * np.log(means)  # dB
        lf = stats[:, -1] if b.n_lf else None
        half = b.frame_len // 2
        out = []
        for ti, trig in enumerate(b.triggers):
            stat = stats[:, ti]
            # Peaks: the largest statistic within +-k frames (k <= e: inside ``stat``), above threshold.
            above = core[stat[core] >= trig.s.threshold_db]
            if not above.size:
                continue
            win = np.lib.stride_tricks.sliding_window_view(stat, 2 * trig.k + 1)
            cand = above[stat[above] >= win[above - trig.k].max(axis=1)]
            if not cand.size:
                continue
            other = _DB * np.log(lin[cand][:, trig.masks[1]].mean(axis=1))
            for j, oth in zip(cand, other, strict=True):  # candidate events only (a few per second)
                frame_no = f0 - e + int(j)
                if frame_no - trig.last_peak <= trig.k:  # an exact tie within the window: the earliest frame wins
                    continue
                trig.last_peak = frame_no
                width = np.flatnonzero(stat[j - trig.k:j + trig.k + 1] >= stat[j] - 6.0).size
                hf, lf_db = 0.0, 0.0
                if trig.name != "low":
                    excess = np.maximum(np.exp(seg[j + b.r]) - np.exp(ref[j]), 0.0)
                    wide = float(excess[b.wide_mask].sum())
                    hf = float(excess[b.hf_mask].sum()) / wide if wide > 0 else 0.0
                    # From LF_SKIP_S on: the 1-2 ms burst itself has left the frame, a thud still rings.
                    lf_db = float(lf[j + b.n_skip:j + b.n_lf + 1].max()) if lf is not None else 0.0
                out.append(Transient(trig.name, frame_no * b.hop + half, float(stat[j]), float(oth),
                                     width * b.hop / b.rate_hz, hf, lf_db))
        return out
