"""IMA ADPCM microphone encoding: bit-exact against the standard library's audioop (where it still
exists), streaming equivalence, packets (stream type 3), quality and speed."""

from __future__ import annotations

import importlib
import time
import warnings

import numpy as np
import pytest

from firmware_sim.link_faults import LinkFaults
from jointmon import adpcm
from jointmon.errors import PacketError
from jointmon.packets import (
    MAX_ADPCM_SAMPLES,
    StreamType,
    decode_packet,
    encode_adpcm_packet,
    encode_packet,
)


def _audio(n: int, seed: int = 1) -> np.ndarray:
    """A hard test signal: random walk wrapping over the full range, clipped runs, silence, a click."""
    rng = np.random.default_rng(seed)
    x = (np.cumsum(rng.normal(0, 800, n)) % 60000 - 30000).astype(np.int16)
    x[100:200], x[200:300], x[5000:7000] = 32767, -32768, 0
    x[9000:9001] = -32768
    return x


def _audioop():
    with warnings.catch_warnings():  # deprecated in 3.11, removed in 3.13: the reference where it exists
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


@pytest.mark.skipif(_audioop() is None, reason="audioop removed from this Python (3.13+)")
def test_bit_exact_with_audioop() -> None:
    audioop = _audioop()
    x = _audio(16000)
    ours, state = adpcm.encode(x, (0, 0))
    ref, ref_state = audioop.lin2adpcm(x.tobytes(), 2, None)
    swapped = bytes(((b >> 4) | ((b & 0x0F) << 4)) for b in ref)  # audioop puts the first sample high
    assert ours == swapped and state == ref_state
    pcm, dstate = adpcm.decode(ours, len(x), (0, 0))
    ref_pcm, ref_dstate = audioop.adpcm2lin(ref, 2, None)
    np.testing.assert_array_equal(pcm, np.frombuffer(ref_pcm, np.int16))
    assert dstate == ref_dstate == state


def test_loop_and_scan_decoders_agree_and_chunks_equal_whole() -> None:
    x = _audio(20001)
    data, _ = adpcm.encode(x)
    whole, end_state = adpcm.decode(data, len(x))  # > SCAN_MIN_SAMPLES: the vectorised scan
    # The same stream decoded in 200-sample packets (the loop), the state carried from one to the next.
    parts, state = [], (0, 0)
    for start in range(0, len(x), 200):
        n = min(200, len(x) - start)
        part, state = adpcm.decode(data[start // 2:], n, state)
        parts.append(part)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert state == end_state
    # Encoding in chunks with the state carried gives the same bits as encoding at once.
    enc_state, chunks = (0, 0), []
    for start in range(0, 20000, 200):
        c, enc_state = adpcm.encode(x[start:start + 200], enc_state)
        chunks.append(c)
    assert b"".join(chunks) == data[:10000]


def test_quality_on_microphone_like_signal() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    x = (3000 * np.sin(2 * np.pi * 180 * t) + rng.normal(0, 300, t.size)).astype(np.int16)
    x[8000:8040] += (12000 * np.exp(-np.arange(40) / 8) * np.sin(np.arange(40) * 2.1)).astype(np.int16)  # a click
    data, _ = adpcm.encode(x)
    y, _ = adpcm.decode(data, len(x))
    snr_db = 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean((x.astype(float) - y) ** 2))
    assert len(data) == 8000  # 4:1
    assert snr_db > 20.0


def test_adpcm_packet_roundtrip_and_independence() -> None:
    x = _audio(1000)
    state = (0, 0)
    pkts = []
    for k in range(5):
        raw, state = encode_adpcm_packet(k, 1_000_000 + k * 12_500, 16000, x[k * 200:(k + 1) * 200], state)
        pkts.append(raw)
    assert len(pkts[0]) == 12 + 4 + 100 + 2 and pkts[0][1] == 3
    dec = [decode_packet(p) for p in pkts]
    assert all(p.stream == StreamType.MIC_PCM16 and p.codec == "ima_adpcm" and p.samples.shape == (200, 1)
               for p in dec)
    whole, _ = adpcm.decode(adpcm.encode(x)[0], 1000)
    np.testing.assert_array_equal(np.concatenate([p.samples[:, 0] for p in dec]), whole)
    # Each packet carries its start state: packet 3 decodes alone, identically (a lost packet 2 costs nothing more).
    np.testing.assert_array_equal(decode_packet(pkts[3]).samples[:, 0], whole[600:800])
    # Odd counts use half a byte; the maximum is the u8 count field.
    odd, _ = encode_adpcm_packet(0, 0, 16000, x[:MAX_ADPCM_SAMPLES], (0, 0))
    assert MAX_ADPCM_SAMPLES == 255 and len(odd) == 16 + 128 + 2 and decode_packet(odd).samples.shape == (255, 1)
    # PCM packets decode as before.
    assert decode_packet(encode_packet(StreamType.MIC_PCM16, 0, 0, 16000, 0, x[:10])).codec == "pcm16"


def test_bad_adpcm_packets_are_packet_errors() -> None:
    raw, _ = encode_adpcm_packet(0, 0, 16000, _audio(200), (0, 0))

    def recrc(b: bytearray) -> bytes:
        import binascii
        b[-2:] = binascii.crc_hqx(bytes(b[:-2]), 0xFFFF).to_bytes(2, "little")
        return bytes(b)

    bad_index = bytearray(raw)
    bad_index[14] = 89
    bad_count = bytearray(raw)
    bad_count[10] = 150
    bad_range = bytearray(raw)
    bad_range[11] = 1
    for data, reason in ((recrc(bad_index), "bad_codec_state"), (recrc(bad_count), "bad_count"),
                         (recrc(bad_range), "bad_range")):
        with pytest.raises(PacketError) as exc:
            decode_packet(data)
        assert exc.value.reason == reason


def test_mic_codec_link_option() -> None:
    assert LinkFaults.from_dict({"mic_codec": "adpcm"}).mic_codec == "ima_adpcm"
    assert not LinkFaults.from_dict({"mic_codec": "adpcm"}).active  # a setting, not a fault
    from jointmon.errors import ConfigError
    with pytest.raises(ConfigError, match="mic_codec"):
        LinkFaults.from_dict({"mic_codec": "mp3"})


def test_decoder_is_much_faster_than_real_time() -> None:
    data, _ = adpcm.encode(_audio(16000))
    t = time.perf_counter()
    for _rep in range(3):
        state = (0, 0)
        for start in range(0, 16000, 200):  # per packet, as the gateway decodes
            _, state = adpcm.decode(data[start // 2:], 200, state)
    per_second_s = (time.perf_counter() - t) / 3
    assert per_second_s < 0.1  # > 10x real time even on a loaded CI core (measured ~180x)


def test_standard_set_adpcm_variant_changes_only_the_codec(tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    from firmware_sim.scenario import load_scenario

    repo = Path(__file__).resolve().parents[1]
    for codec in ("pcm16", "adpcm"):
        proc = subprocess.run([sys.executable, str(repo / "bench/standard_set.py"), "--out", str(tmp_path / codec),
                               "--scenarios-only", "--sessions", "6", "--mic-codec", codec],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    for f in sorted((tmp_path / "pcm16").glob("s*.toml")):
        pcm, adp = (tomllib.loads(p.read_text()) for p in (f, tmp_path / "adpcm" / f.name))
        assert adp["link"].pop("mic_codec") == "adpcm" and "mic_codec" not in pcm["link"]
        assert adp == pcm
        assert LinkFaults.from_dict(load_scenario(tmp_path / "adpcm" / f.name).link).mic_codec == "ima_adpcm"
