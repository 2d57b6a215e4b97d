"""IMA ADPCM (Intel/DVI, 4 bits per sample): the compressed microphone encoding (docs/protocol.md §2).

4:1 against PCM16. The codec state is a predictor (the last decoded sample, int16) and a step
index (0..88); every microphone ADPCM packet carries the state at its first sample, so a lost
packet never corrupts the next one. Nibbles are packed two per byte, **low nibble first** (the
order of IMA ADPCM in WAV files and of the common embedded encoders).

Why our own code and not a library: the only C implementation in reach is the standard library's
``audioop`` (``lin2adpcm``/``adpcm2lin``), deprecated since Python 3.11 and removed in 3.13; its
back-port ``audioop-lts`` installs on Python >= 3.13 only, and ``pyima`` (2016) is unmaintained.
The tests check this module bit for bit against ``audioop`` where it still exists.

Speed: the encoder is a per-sample loop (the prediction feeds back into the next nibble: inherently
sequential); it runs in the simulated firmware, offline. The decoder has two paths. Both recurrences
of the decoder (step index and predictor) are *clamped* running sums ``x[n+1] = clip(x[n] + a[n],
lo, hi)``, and maps of the form ``x -> clip(x + s, l, h)`` are closed under composition, so a
parallel prefix scan computes them in log2(n) NumPy passes instead of n Python steps: that wins on
long blocks (recordings, 4000 samples: ~2 ms per second of 16 kHz audio). On one packet (<= 255
samples) the ~130 NumPy calls of the scan cost more than a plain loop (measured: 200-sample packets,
loop ~5.5 ms per second of audio = ~180x real time, scan ~11 ms), so short blocks take the loop.
"""

from __future__ import annotations

import numpy as np

STEP_TABLE = np.array([
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66, 73, 80, 88, 97,
    107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408, 449, 494, 544, 598, 658, 724,
    796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066, 2272, 2499, 2749, 3024, 3327, 3660, 4026,
    4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500,
    20350, 22385, 24623, 27086, 29794, 32767], dtype=np.int64)
INDEX_TABLE = np.array([-1, -1, -1, -1, 2, 4, 6, 8] * 2, dtype=np.int64)
MAX_STEP_INDEX = len(STEP_TABLE) - 1  # 88
_STEPS = STEP_TABLE.tolist()  # plain lists: faster than NumPy scalars in the sequential encoder
_INDEX = INDEX_TABLE.tolist()

AdpcmState = tuple[int, int]  # (predictor: int16 sample, step index: 0..88)


def encoded_bytes(count: int) -> int:
    """Bytes of ``count`` ADPCM samples (two per byte, the last byte half used when ``count`` is odd)."""
    return (count + 1) // 2


def encode(samples: np.ndarray, state: AdpcmState = (0, 0)) -> tuple[bytes, AdpcmState]:
    """Encode int16 ``samples`` (1-D) starting from ``state``; return the packed nibbles and the state
    after the last sample (what the next block's header carries)."""
    pred, index = int(state[0]), int(state[1])
    if not -32768 <= pred <= 32767 or not 0 <= index <= MAX_STEP_INDEX:
        raise ValueError(f"bad ADPCM state {state}")
    x = np.asarray(samples).reshape(-1).astype(np.int64).tolist()
    nibbles = bytearray(len(x) + (len(x) & 1))
    steps, index_table = _STEPS, _INDEX
    step = steps[index]
    for n, val in enumerate(x):  # sequential by nature: each nibble depends on the previous prediction
        diff = val - pred
        code = 0
        if diff < 0:
            code = 8
            diff = -diff
        vpdiff = step >> 3
        if diff >= step:
            code |= 4
            diff -= step
            vpdiff += step
        half = step >> 1
        if diff >= half:
            code |= 2
            diff -= half
            vpdiff += half
        quarter = step >> 2
        if diff >= quarter:
            code |= 1
            vpdiff += quarter
        pred = pred - vpdiff if code & 8 else pred + vpdiff
        pred = -32768 if pred < -32768 else (32767 if pred > 32767 else pred)
        index += index_table[code]
        index = 0 if index < 0 else (MAX_STEP_INDEX if index > MAX_STEP_INDEX else index)
        step = steps[index]
        nibbles[n] = code
    packed = np.frombuffer(bytes(nibbles), np.uint8)
    return (packed[0::2] | (packed[1::2] << 4)).astype(np.uint8).tobytes(), (pred, index)


def _clamped_cumsum(steps: np.ndarray, x0: int, lo: int | np.ndarray, hi: int | np.ndarray) -> np.ndarray:
    """``x[n+1] = clip(x[n] + steps[n], lo, hi)`` from ``x[0] = x0``; returns ``x[1..n]`` (int64).

    Element i stands for the map ``f_i(x) = clip(x + s_i, l_i, h_i)``; composing two such maps gives
    another (``s = s1 + s2``, ``l = clip(l1 + s2, l2, h2)``, ``h = clip(h1 + s2, l2, h2)``), so a
    Hillis-Steele inclusive scan yields every prefix composition in ceil(log2(n)) vectorised passes.
    """
    n = steps.shape[0]
    s = steps.astype(np.int64, copy=True)
    lo_a = np.full(n, lo, np.int64)
    hi_a = np.full(n, hi, np.int64)
    k = 1
    while k < n:
        s1, l1, h1 = s[:-k], lo_a[:-k], hi_a[:-k]  # the earlier map, applied first
        s2, l2, h2 = s[k:], lo_a[k:], hi_a[k:]
        new_l = np.minimum(np.maximum(l1 + s2, l2), h2)
        new_h = np.minimum(np.maximum(h1 + s2, l2), h2)
        new_s = s1 + s2
        s[k:], lo_a[k:], hi_a[k:] = new_s, new_l, new_h
        k *= 2
    return np.minimum(np.maximum(x0 + s, lo_a), hi_a)


SCAN_MIN_SAMPLES = 512  # from here on the vectorised scan beats the loop (measured, see the module docstring)


def decode(data: bytes | memoryview, count: int, state: AdpcmState = (0, 0)) -> tuple[np.ndarray, AdpcmState]:
    """Decode ``count`` samples from packed nibbles ``data`` starting at ``state``; return int16 samples
    (1-D) and the state after the last one. ``data`` must hold at least ``encoded_bytes(count)`` bytes."""
    pred, index = int(state[0]), int(state[1])
    if not -32768 <= pred <= 32767 or not 0 <= index <= MAX_STEP_INDEX:
        raise ValueError(f"bad ADPCM state {state}")
    if len(data) < encoded_bytes(count):
        raise ValueError(f"{len(data)} bytes hold fewer than {count} ADPCM samples")
    if count <= 0:
        return np.empty(0, np.int16), (pred, index)
    if count < SCAN_MIN_SAMPLES:
        return _decode_loop(bytes(data[: encoded_bytes(count)]), count, pred, index)
    return _decode_scan(data, count, pred, index)


def _decode_loop(raw: bytes, count: int, pred: int, index: int) -> tuple[np.ndarray, AdpcmState]:
    """The reference IMA decoder, one sample per step (fastest for one packet)."""
    steps, index_table = _STEPS, _INDEX
    out = [0] * (2 * len(raw))
    step = steps[index]
    n = 0
    for byte in raw:
        for code in (byte & 0x0F, byte >> 4):
            index += index_table[code]
            index = 0 if index < 0 else (MAX_STEP_INDEX if index > MAX_STEP_INDEX else index)
            vpdiff = step >> 3
            if code & 4:
                vpdiff += step
            if code & 2:
                vpdiff += step >> 1
            if code & 1:
                vpdiff += step >> 2
            pred = pred - vpdiff if code & 8 else pred + vpdiff
            pred = -32768 if pred < -32768 else (32767 if pred > 32767 else pred)
            step = steps[index]
            out[n] = pred
            n += 1
            if n == count:  # an odd count leaves the last high nibble unused
                return np.array(out[:count], np.int16), (pred, index)
    raise AssertionError("unreachable: raw holds encoded_bytes(count) bytes")


def _decode_scan(data: bytes | memoryview, count: int, pred: int, index: int) -> tuple[np.ndarray, AdpcmState]:
    """The same decoder as two clamped prefix scans (fastest for long blocks)."""
    raw = np.frombuffer(data, np.uint8, encoded_bytes(count))
    nib = np.empty(2 * raw.shape[0], np.int64)
    nib[0::2] = raw & 0x0F
    nib[1::2] = raw >> 4
    nib = nib[:count]
    index_after = _clamped_cumsum(INDEX_TABLE[nib], index, 0, MAX_STEP_INDEX)
    index_before = np.empty(count, np.int64)
    index_before[0] = index
    index_before[1:] = index_after[:-1]
    step = STEP_TABLE[index_before]
    # The same shifts as the encoder (not step*(2m+1)/8): bit-exact with every IMA decoder.
    vpdiff = (step >> 3) + (step & -((nib >> 2) & 1)) + ((step >> 1) & -((nib >> 1) & 1)) + ((step >> 2) & -(nib & 1))
    signed = np.where(nib & 8, -vpdiff, vpdiff)
    pcm = _clamped_cumsum(signed, pred, -32768, 32767)
    return pcm.astype(np.int16), (int(pcm[-1]), int(index_after[-1]))
