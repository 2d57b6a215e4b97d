"""Transients in one contact-microphone stream: streaming short-time spectra, CFAR whitening, peak picking.

Why this shape (and why hand-written): a joint sound is short against a background that is loud but changes
slowly on the scale of the sound (muscle rumble rising with load, mains hum, cloth rubbing over 0.15-0.8 s).
So each short-time spectrum bin is compared with the same bin's level in the frames around it (a
cell-averaging CFAR detector, as in radar: reference frames on both sides, a guard gap around the cell under
test). The reference is a geometric mean (mean of dB), so other transients in the reference window barely move
it. Hum and rumble are stationary per bin and whiten away; rubbing rises over tens of ms and is followed.
librosa / aubio onset functions are whole-buffer or fixed-hop spectral-flux detectors without per-bin
two-sided whitening, which is what reaches 0 dB SNR here (``bench/sound_peers.py`` compares them).

Two bands, each its own spectrogram:

* ``high``: 2 ms Hann frames every 0.5 ms (500 Hz bins); the statistic is the mean whitened power over
  ``high_band_hz`` (clicks, impact cracks) and over ``mid_band_hz`` (crepitus bursts ring at 0.4-3 kHz).
* ``low``: 16 ms frames every 4 ms (62.5 Hz bins); the mean whitened power over ``low_band_hz`` (tendon
  snaps at 70-250 Hz, impact thuds).

Streaming: frames need ``ref_s`` of spectra on both sides, so output lags input by that much; the state is the
unframed tail of samples and the last frames' log spectra. Whole signal or 50 ms blocks give the same
transients (the moving sums restart per block, so levels agree to ~1e-9 dB, not bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

_EPS = 1e-20


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
    low: BandSettings = BandSettings(256, 64, ((60.0, 320.0), (20.0, 90.0)), 0.160, 0.040, 6.0, 0.030)


@dataclass(frozen=True, slots=True)
class Transient:
    """One candidate: ``index`` = stream sample index (since the stream started) of the peak frame's centre."""

    band: str  # "high" | "mid" | "low"
    index: int
    level_db: float  # trigger statistic: mean whitened power over the trigger band, dB above the local level
    other_db: float  # the same statistic over the band's second band, dB
    width_s: float  # time the trigger statistic stays within 6 dB of its peak, s
    hf_fraction: float  # excess power above 2 kHz / excess power 0.4-7 kHz at the peak frame (high/mid), else 0


@dataclass
class _BandState:
    s: BandSettings
    rate_hz: float
    window: np.ndarray
    masks: list[np.ndarray]
    hf_mask: np.ndarray
    wide_mask: np.ndarray
    r: int
    g: int
    k: int
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hist: np.ndarray | None = None  # (frames, bins) log power, the frames kept for context
    hist_first: int = 0  # frame number of hist[0]
    next_frame: int = 0  # frame number of the first frame not yet decided
    last_peak: int = -(10**9)  # frame number of the last candidate

    @classmethod
    def build(cls, s: BandSettings, rate_hz: float) -> _BandState:
        # Frame sizes are given at 16 kHz: keep their durations at other rates.
        scale = rate_hz / 16000.0
        s = replace(s, frame_len=max(8, round(s.frame_len * scale)), hop=max(1, round(s.hop * scale)))
        f = np.fft.rfftfreq(s.frame_len, 1.0 / rate_hz)
        masks = [(f >= lo) & (f <= hi) for lo, hi in s.bands_hz]
        frame_rate = rate_hz / s.hop
        return cls(s, rate_hz, np.hanning(s.frame_len + 2)[1:-1], masks, (f >= 2000.0) & (f <= 7000.0),
                   (f >= 400.0) & (f <= 7000.0), max(2, round(s.ref_s * frame_rate)),
                   max(1, round(s.guard_s * frame_rate)), max(1, round(s.peak_window_s * frame_rate)))

    @property
    def context(self) -> int:
        return self.r + self.k  # frames needed on each side of a frame before it can be decided


class TransientDetector:
    """``process(x)``: next block of samples (full scale) -> transients whose context is complete.

    ``flush()`` at the end of the stream decides the last frames (the missing future is the last frame
    repeated). Results do not depend on how the signal is cut into blocks."""

    def __init__(self, settings: TransientSettings | None = None) -> None:
        self.settings = settings or TransientSettings()
        s = self.settings
        self._bands = {name: _BandState.build(b, s.rate_hz) for name, b in
                       (("high", s.high), ("mid", s.mid), ("low", s.low))}
        self._seen = 0

    @property
    def samples_seen(self) -> int:
        return self._seen

    def process(self, x: np.ndarray) -> list[Transient]:
        x = np.asarray(x, dtype=float).ravel()
        self._seen += x.size
        out: list[Transient] = []
        for name, b in self._bands.items():
            out += self._band(name, b, x, final=False)
        return sorted(out, key=lambda t: t.index)

    def flush(self) -> list[Transient]:
        out: list[Transient] = []
        for name, b in self._bands.items():
            out += self._band(name, b, np.zeros(0), final=True)
        return sorted(out, key=lambda t: t.index)

    def _frames(self, b: _BandState, x: np.ndarray) -> np.ndarray:
        """Log power spectra (dB) of the complete new frames."""
        buf = np.concatenate((b.tail, x))
        n, hop = b.s.frame_len, b.s.hop
        nfr = (buf.size - n) // hop + 1 if buf.size >= n else 0
        if nfr <= 0:
            b.tail = buf
            return np.zeros((0, n // 2 + 1))
        frames = np.lib.stride_tricks.sliding_window_view(buf, n)[::hop][:nfr]
        spec = np.fft.rfft(frames * b.window, axis=1)
        b.tail = buf[nfr * hop:]
        return 10.0 * np.log10(spec.real**2 + spec.imag**2 + _EPS)

    def _band(self, name: str, b: _BandState, x: np.ndarray, final: bool) -> list[Transient]:
        new = self._frames(b, x)
        if b.hist is None:
            if not new.shape[0]:
                return []
            # Start of stream: the past is the first frame repeated (no look-back exists yet).
            b.hist = np.repeat(new[:1], b.context, axis=0)
            b.hist_first = -b.context
        hist = np.concatenate((b.hist, new))
        last_real = b.hist_first + hist.shape[0] - 1
        if final:  # end of stream: the future is the last frame repeated
            hist = np.concatenate((hist, np.repeat(hist[-1:], b.context, axis=0)))
            last_decidable = last_real - b.r  # frames whose reference would be mostly padding are not decided
        else:
            last_decidable = last_real - b.context
        out: list[Transient] = []
        if last_decidable >= b.next_frame:
            out = self._decide(name, b, hist, b.next_frame, last_decidable + 1)
            b.next_frame = last_decidable + 1
        keep_from = max(b.next_frame - b.context - b.hist_first, 0)
        b.hist = hist[keep_from:]
        b.hist_first += keep_from
        return out

    def _decide(self, name: str, b: _BandState, hist: np.ndarray, f0: int, f1: int) -> list[Transient]:
        """Decide frames ``f0 .. f1 - 1`` (frame numbers); ``hist`` holds frames ``b.hist_first ..``."""
        i0, i1 = f0 - b.hist_first, f1 - b.hist_first
        lo, hi = i0 - b.k - b.r, i1 + b.k + b.r
        seg = hist[lo:hi]
        # Two-sided reference: mean of dB over [i-r, i-g) and (i+g, i+r], from one cumulative sum.
        c = np.concatenate((np.zeros((1, seg.shape[1])), np.cumsum(seg, axis=0)))
        idx = np.arange(b.r, seg.shape[0] - b.r)
        before = c[idx - b.g + 1] - c[idx - b.r]
        after = c[idx + b.r + 1] - c[idx + b.g]
        ref = (before + after) / (2 * (b.r - b.g + 1))
        white_db = seg[idx] - ref  # frames f0 - k .. f1 + k - 1
        lin = 10.0 ** (white_db / 10.0)
        stat = 10.0 * np.log10(lin[:, b.masks[0]].mean(axis=1))
        other = 10.0 * np.log10(lin[:, b.masks[1]].mean(axis=1))
        # Peaks: the largest statistic within +-k frames, above threshold.
        mx = ndimage.maximum_filter1d(stat, 2 * b.k + 1, mode="nearest")
        core = np.arange(b.k, b.k + (f1 - f0))
        cand = core[(stat[core] >= b.s.threshold_db) & (stat[core] >= mx[core])]
        out = []
        half = b.s.frame_len // 2
        for j in cand:  # candidate events only (a few per second)
            frame_no = f0 - b.k + int(j)
            if frame_no - b.last_peak <= b.k:  # an exact tie within the window: the earliest frame wins
                continue
            b.last_peak = frame_no
            width = np.flatnonzero(stat[j - b.k:j + b.k + 1] >= stat[j] - 6.0).size
            hf = 0.0
            if name != "low":
                excess = np.maximum(10.0 ** (seg[j + b.r] / 10.0) - 10.0 ** (ref[j] / 10.0), 0.0)
                wide = float(excess[b.wide_mask].sum())
                hf = float(excess[b.hf_mask].sum()) / wide if wide > 0 else 0.0
            out.append(Transient(name, frame_no * b.s.hop + half, float(stat[j]), float(other[j]),
                                 width * b.s.hop / b.rate_hz, hf))
        return out
