"""The clock offset between a joint's two microphones, tracked from the sounds both hear.

Each sensor's samples get wall-clock times from its own clock map (sensor_gateway/clock_map.py). On a
recording the two maps agree to a sample; live they differ by the two fits' errors: 1-2 ms after the first
seconds, more on a starved host, converging over tens of seconds (slew <= 0.5 ms/s). A clear joint sound
(click, burst) is the same waveform on both microphones, so its lag (:func:`analysis.sound_coherence.lag_scan`)
measures the offset. Written by hand: it is one number and a rule for trusting it, no library needed.
"""

from __future__ import annotations


class MicOffset:
    """The second microphone's lag behind the first (samples): the last clear sound's.

    The latest lag, not an average: the offset moves (up to ~16 samples/s while the clock maps converge), and a
    clear sound's lag is exact to a sample, while chance matches are kept out before (both microphones must have
    had a transient, and the match must be close). None before any."""

    def __init__(self) -> None:
        self.samples: int | None = None
        self.t_ns: int | None = None  # when it was measured (first microphone's clock)
        self.updates = 0

    def update(self, t_ns: int, lag: int) -> None:
        self.samples, self.t_ns = int(lag), int(t_ns)
        self.updates += 1
