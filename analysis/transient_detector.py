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
_MINUS_6DB = 10.0 ** -0.6  # a power ratio of -6 dB
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
    dft: np.ndarray  # (2 * bins, frame_len): windowed cos | -sin rows of the used bins
    bins: np.ndarray  # the rfft bins the statistics use (the masks above index these)
    # Derived in __post_init__: every band mean the decisions read comes out of one matrix product.
    means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (columns, bins): band-mean weights
    other_col: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # per trigger: its second band's column
    has_hf: bool = False  # a high/mid trigger is here: its candidates report hf_fraction and lf_db
    is_low: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per trigger: the low band (no hf, lf)
    lf_col: int = -1  # the thud band's column (-1: none, lf_db 0)
    hf_wide: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (bins, 2): > 2 kHz | 0.4-7 kHz sums
    thr_lin: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per trigger: threshold, linear power ratio
    ks: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # per trigger: peak half-window, frames
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # -max k .. max k
    lf_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # n_skip .. n_lf
    ext: int = 0  # frames of statistic needed on each side of a decided frame (peak window, thud tail)
    context: int = 0  # frames needed on each side of a frame before it can be decided (CFAR reference + ext)
    pos: int = 0  # stream sample index where the next frame starts
    same_k: bool = True  # all triggers share one peak half-window (no per-trigger mask in the peak test)
    # History, time along the last axis (bins are rows: every time slice below is contiguous): log power of frame
    # number ``buf_first + i`` in ``logp[:, i]`` for i in lo .. end - 1 (the frames kept for context), and
    # ``csum[:, i]`` = sum of ``logp[:, :i]``; preallocated, appended in place, shifted to the front when full.
    logp: np.ndarray | None = None
    csum: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    buf_first: int = 0  # frame number of logp[0]
    lo: int = 0  # first kept row
    end: int = 0  # one past the last real frame's row
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
        dft = np.vstack((window * np.cos(ang).T, -window * np.sin(ang).T))
        for t in triggers:
            t.masks = [m[bins] for m in t.masks]
        return cls(frame_len, hop, rate_hz, window, hf[bins], wide[bins], lf[bins],
                   max(2, round(b0.ref_s * frame_rate)), max(1, round(b0.guard_s * frame_rate)),
                   max(0, round(LF_AFTER_S * frame_rate)),
                   max(0, round(LF_SKIP_S * frame_rate)), triggers, dft, bins)

    def __post_init__(self) -> None:
        # Columns: the triggers' bands first (in trigger order), then the second bands and the thud band, each
        # band once (high's second band is mid's trigger band and the other way round).
        cols = [t.masks[0] for t in self.triggers]

        def col(mask: np.ndarray) -> int:
            for i, c in enumerate(cols):
                if np.array_equal(c, mask):
                    return i
            cols.append(mask)
            return len(cols) - 1

        self.other_col = np.array([col(t.masks[1]) for t in self.triggers])
        self.is_low = np.array([t.name == "low" for t in self.triggers])
        self.has_hf = not self.is_low.all()
        self.lf_col = col(self.lf_mask) if self.has_hf and self.n_lf else -1
        self.means = np.stack([m / max(m.sum(), 1) for m in cols])
        self.hf_wide = np.stack((self.hf_mask, self.wide_mask)).astype(float)
        self.thr_lin = np.array([[10.0 ** (t.s.threshold_db / 10.0)] for t in self.triggers])
        self.ks = np.array([t.k for t in self.triggers])
        self.same_k = bool((self.ks == self.ks[0]).all())
        self.offsets = np.arange(-self.ks.max(), self.ks.max() + 1)
        self.lf_offsets = np.arange(self.n_skip, self.n_lf + 1)
        self.ext = max(int(self.ks.max()), self.n_lf)
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
        # The samples not yet in every spectrogram's frames, shared: ``_buf[:_n]`` holds stream samples
        # ``_buf_first ..``; appended in place, moved to the front when full.
        self._buf = np.zeros(4096)
        self._n = 0
        self._buf_first = 0

    @property
    def samples_seen(self) -> int:
        return self._seen

    @property
    def lag_s(self) -> float:
        """How far (s) the decided transients trail the input: the slowest spectrogram's context."""
        return max((sp.context + 1) * sp.hop / sp.rate_hz + sp.frame_len / sp.rate_hz for sp in self._specs)

    def process(self, x: np.ndarray) -> list[Transient]:
        x = np.asarray(x)
        if x.ndim != 1:
            x = x.ravel()
        if x.size:
            self._push(x)
        out: list[Transient] = []
        for sp in self._specs:
            out += self._run(sp, final=False)
        return sorted(out, key=lambda t: (t.index, t.band)) if len(out) > 1 else out

    def flush(self) -> list[Transient]:
        """Decide the last frames; the stream ends here (a new stream needs a new detector)."""
        out: list[Transient] = []
        for sp in self._specs:
            out += self._run(sp, final=True)
        return sorted(out, key=lambda t: (t.index, t.band))

    def _push(self, x: np.ndarray) -> None:
        """Append samples to the shared buffer, dropping those every spectrogram has framed."""
        if self._n + x.size > self._buf.size:
            drop = min(sp.pos for sp in self._specs) - self._buf_first
            keep = self._n - drop
            buf = self._buf if keep + x.size <= self._buf.size else np.empty(2 * (keep + x.size))
            buf[:keep] = self._buf[drop:self._n]
            self._buf, self._n, self._buf_first = buf, keep, self._buf_first + drop
        self._buf[self._n:self._n + x.size] = x
        self._n += x.size
        self._seen += x.size

    def _frames(self, b: _Spectrogram) -> None:
        """Log power spectra (natural log) of the complete new frames, appended to the history."""
        n, hop = b.frame_len, b.hop
        i0 = b.pos - self._buf_first
        avail = self._n - i0
        if avail < n:
            return
        nfr = (avail - n) // hop + 1
        buf = self._buf
        # Frame i is buf[i0 + i * hop: ... + n]: overlapping rows, no BLAS operand, so copied into one (ascontiguous).
        frames = np.ascontiguousarray(np.ndarray((nfr, n), buf.dtype, buf, i0 * buf.itemsize,
                                                 (hop * buf.itemsize, buf.itemsize)))
        b.pos += nfr * hop
        ri = b.dft @ frames.T  # (2 bins, frames): the cos rows then the -sin rows
        ri *= ri
        k = b.bins.size
        p = ri[:k]
        p += ri[k:]
        p += _EPS
        np.log(p, out=p)
        if b.logp is None:
            # Start of stream: the past is the first frame repeated (no look-back exists yet).
            cap = max(2 * (b.context + nfr), 64)
            b.logp, b.csum = np.empty((k, cap)), np.empty((k, cap + 1))
            b.logp[:, :b.context] = p[:, :1]
            b.csum[:, 0] = 0.0
            np.multiply(b.logp[:, :1], np.arange(1, b.context + 1), out=b.csum[:, 1:b.context + 1])
            b.buf_first, b.lo, b.end = -b.context, 0, b.context
        self._append(b, p)

    @staticmethod
    def _reserve(b: _Spectrogram, frames: int) -> None:
        """Room for ``frames`` more frames after ``b.end``: the kept frames move to the front (the sums re-based,
        so they stay small over hours), a bigger buffer when that is not enough."""
        kept = b.end - b.lo
        cap = max(b.logp.shape[1], 2 * (kept + frames), 64)
        logp, csum = np.empty((b.bins.size, cap)), np.empty((b.bins.size, cap + 1))
        logp[:, :kept] = b.logp[:, b.lo:b.end]
        np.subtract(b.csum[:, b.lo:b.end + 1], b.csum[:, b.lo:b.lo + 1], out=csum[:, :kept + 1])
        b.logp, b.csum = logp, csum
        b.buf_first += b.lo
        b.end, b.lo = kept, 0

    def _append(self, b: _Spectrogram, logp: np.ndarray) -> None:
        """Append frames (columns of log power) to the history and its cumulative sum."""
        nfr = logp.shape[1]
        if b.end + nfr > b.logp.shape[1]:
            self._reserve(b, nfr)
        e0 = b.end
        new = b.logp[:, e0:e0 + nfr]
        new[...] = logp
        c = b.csum[:, e0 + 1:e0 + 1 + nfr]
        new.cumsum(axis=1, out=c)
        c += b.csum[:, e0:e0 + 1]
        b.end = e0 + nfr

    def _run(self, b: _Spectrogram, final: bool) -> list[Transient]:
        self._frames(b)
        if b.logp is None:
            return []
        last_real = b.buf_first + b.end - 1
        if final:  # end of stream: the future is the last frame repeated (kept after the real frames)
            self._append(b, np.repeat(b.logp[:, b.end - 1:b.end], b.context, axis=1))
            last_decidable = last_real - b.r  # frames whose reference would be mostly padding are not decided
        else:
            last_decidable = last_real - b.context
        out: list[Transient] = []
        if last_decidable >= b.next_frame:
            out = self._decide(b, b.next_frame, last_decidable + 1)
            b.next_frame = last_decidable + 1
        b.lo = max(b.next_frame - b.context - b.buf_first, b.lo)
        return out

    def _decide(self, b: _Spectrogram, f0: int, f1: int) -> list[Transient]:
        """Decide frames ``f0 .. f1 - 1`` (frame numbers) from the history."""
        e, r, g = b.ext, b.r, b.g
        i0, i1 = f0 - b.buf_first, f1 - b.buf_first
        a, n = i0 - e - r, (i1 - i0) + 2 * (e + r)  # the frames used: logp[:, a:a + n]
        m = n - 2 * r  # frames with a whitened spectrum: f0 - e .. f1 + e - 1
        c = b.csum[:, a:a + n + 1]
        seg = b.logp[:, a + r:a + r + m]
        # Two-sided reference: mean of log power over [i-r, i-g) and (i+g, i+r], from the cumulative sum.
        ref = c[:, r - g + 1:r - g + 1 + m] - c[:, :m]
        ref += c[:, 2 * r + 1:2 * r + 1 + m]
        ref -= c[:, r + g:r + g + m]
        ref *= 1.0 / (2 * (r - g + 1))
        lin = seg - ref
        np.exp(lin, out=lin)  # whitened power (linear): power over the reference's geometric mean
        means = b.means @ lin  # (columns, frames): band means, linear
        nt = len(b.triggers)
        stat = means[:nt]
        core = stat[:, e:m - e]
        above = core >= b.thr_lin  # (triggers, decided frames)
        if not above.any():  # most blocks: nothing to decide
            return []
        # Peaks: the largest statistic within +-k frames (k <= e: inside ``stat``), above threshold. Compared in
        # linear units (the dB values are reported only for the candidates). win[t, i] = stat[t, i : i + 2 kmax + 1].
        kmax = b.offsets[-1]
        nd, isz = m - 2 * e, stat.itemsize
        win = np.ndarray((nt, nd, 2 * kmax + 1), stat.dtype, stat, (e - kmax) * isz,
                         (stat.strides[0], isz, isz))
        if b.same_k:
            above &= core >= win.max(axis=2)
            trig, cols = above.nonzero()
            if not trig.size:
                return []
            around = win[trig, cols]  # (candidates, 2 k + 1)
        else:
            trig, cols = above.nonzero()
            around = win[trig, cols]
            inside = np.abs(b.offsets) <= b.ks[trig][:, None]
            peak = ((around <= core[trig, cols][:, None]) | ~inside).all(axis=1)
            if not peak.any():
                return []
            trig, cols, around, inside = trig[peak], cols[peak], around[peak], inside[peak]
        level = around[:, kmax]
        cols += e
        # Width: frames within 6 dB of the peak inside the peak window.
        within = around >= level[:, None] * _MINUS_6DB
        width = (within if b.same_k else within & inside).sum(axis=1)
        reported = [level, means[b.other_col[trig], cols]]
        hf = np.zeros(cols.size)
        if b.has_hf:
            # hf fraction: excess power above 2 kHz over 0.4-7 kHz at the peak frame (its power over its reference).
            excess = np.exp(seg[:, cols]) - np.exp(ref[:, cols])
            np.maximum(excess, 0.0, out=excess)
            hw = b.hf_wide @ excess
            np.divide(hw[0], hw[1], out=hf, where=hw[1] > 0)
        if b.lf_col >= 0:
            # From LF_SKIP_S on: the 1-2 ms burst itself has left the frame, a thud still rings.
            reported.append(means[b.lf_col, cols[:, None] + b.lf_offsets].max(axis=1))
        db = np.log(np.array(reported, float))  # (2 or 3, candidates)
        db *= _DB  # dB
        low = b.is_low[trig]
        half = b.frame_len // 2
        out = []
        lf_l = db[2].tolist() if b.lf_col >= 0 else [0.0] * cols.size
        for j, ti, w, is_low, lev, oth, hfv, lfv in zip(cols.tolist(), trig.tolist(), width.tolist(), low.tolist(),
                                                          db[0].tolist(), db[1].tolist(), hf.tolist(), lf_l,
                                                          strict=True):  # candidate events only (a few per second)
            t = b.triggers[ti]
            frame_no = f0 - e + j
            if frame_no - t.last_peak <= t.k:  # an exact tie within the window: the earliest frame wins
                continue
            t.last_peak = frame_no
            out.append(Transient(t.name, frame_no * b.hop + half, lev, oth, w * b.hop / b.rate_hz,
                                 0.0 if is_low else hfv, 0.0 if is_low else lfv))
        return out
