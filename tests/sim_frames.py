"""A simulated session's samples as the frames the gateway would publish, without the BLE link or clock maps."""

from __future__ import annotations

from firmware_sim.session import SimulatedSession
from jointmon.frames import Frame
from jointmon.packets import StreamType, channel_scale
from jointmon.topics import DataTopic


def direct_frames(sim: SimulatedSession) -> list[tuple[DataTopic, Frame]]:
    """Reference: the simulator's own int16 samples and scales in 50 ms frames (what the gateway sends,
    minus the BLE clock mapping), t0_ns = sample time since the stream start."""
    out = []
    for name, sig in sim.sensors.items():
        streams = ((StreamType.IMU, "imu", sig.imu_raw, sig.imu_rate_hz, channel_scale(StreamType.IMU,
                                                                                       sig.imu_range_code)),
                   (StreamType.MIC_PCM16, "mic", sig.mic_raw.reshape(-1, 1), sig.mic_rate_hz,
                    channel_scale(StreamType.MIC_PCM16, 0)))
        for stream, level, raw, rate, scale in streams:
            n = round(0.05 * rate)
            for k, i in enumerate(range(0, raw.shape[0], n)):
                out.append((DataTopic(sim.athlete, sim.joint, name, level),
                            Frame(stream, k, i, round(i * 1e9 / rate), float(rate), scale, raw[i:i + n])))
    return sorted(out, key=lambda tf: tf[1].t0_ns)  # stable: same tie order as the folder's merge
