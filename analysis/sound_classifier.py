"""Which joint sound a group of microphone transients is: cavitation click, tendon snap or crepitus train.

Physical signatures (``../shared/CLINICAL.md``; ``firmware_sim/joint_sounds.py`` documents the same physics):

* click: one short (<= ~3 ms) broadband transient, most excess power above 2 kHz, isolated in time;
* snap: a low-frequency (60-320 Hz) thump lasting 10-30 ms, nothing comparable above 2 kHz;
* crepitus: a train of short bursts (0.4-3 kHz) within a few hundred ms, over a range of motion;
* impact crack (rejected): a short transient with little of its excess above 2 kHz (the thud's mid band
  dominates) - or simply an IMU impact at the same time.

Confidence: a logistic function of the margin (dB) of the deciding statistic over its threshold, so 0.5 at
the threshold and ~0.95 ``3 * slope_db`` above it; for crepitus, of the number of bursts in the train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.transient_detector import Transient


@dataclass(frozen=True)
class ClassifierSettings:
    burst_min_db: float = 9.5  # a high/mid transient counts as a burst above this, dB over the local level
    burst_max_width_s: float = 0.003  # and when shorter than this (a click rings <= ~1.2 ms), s
    click_min_db: float = 11.0  # a lone burst is a click above this, dB
    click_min_hf: float = 0.5  # ... with at least this fraction of its excess power above 2 kHz
    crack_max_hf: float = 0.35  # below this high-frequency fraction a burst is an impact crack, not a joint sound
    train_min_bursts: int = 3  # a crepitus train has at least this many bursts
    snap_min_db: float = 12.0  # low-band thump threshold, dB
    snap_max_width_s: float = 0.032  # a snap's thump lasts 10-30 ms; rubbing and rumble swell last longer, s
    slope_db: float = 2.0  # confidence logistic slope, dB


def logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def is_burst(t: Transient, s: ClassifierSettings) -> bool:
    """A short high/mid transient strong enough to be a click or a crepitus burst (impact cracks excluded)."""
    return (t.band in ("high", "mid") and t.level_db >= s.burst_min_db and t.width_s <= s.burst_max_width_s
            and t.hf_fraction >= s.crack_max_hf * (t.band == "high"))


def is_snap(t: Transient, s: ClassifierSettings) -> bool:
    return t.band == "low" and t.level_db >= s.snap_min_db and t.width_s <= s.snap_max_width_s


def classify_group(bursts: list[list[Transient]], s: ClassifierSettings) -> tuple[str, float] | None:
    """A closed group of bursts (no other burst within the train gap; each burst as the transients it gave in
    either band on either microphone) -> (type, confidence) or None (nothing a joint would make)."""
    if len(bursts) >= s.train_min_bursts:
        return "crepitus", train_confidence(len(bursts), s)
    high = [t for burst in bursts for t in burst if t.band == "high"]
    best = max(high, key=lambda t: t.level_db, default=None)
    if best is not None and best.hf_fraction >= s.click_min_hf and best.level_db >= s.click_min_db:
        if len(bursts) == 1 or best.hf_fraction >= 0.8:
            return "click", logistic((best.level_db - s.click_min_db) / s.slope_db)
        return "crepitus", train_confidence(len(bursts), s)
    return None


def train_confidence(n_bursts: int, s: ClassifierSettings) -> float:
    return logistic(1.5 * (n_bursts - s.train_min_bursts + 0.5))


def snap_confidence(t: Transient, s: ClassifierSettings) -> float:
    return logistic((t.level_db - s.snap_min_db) / s.slope_db)
