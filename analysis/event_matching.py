"""Match detected events to ground-truth labels within a time tolerance (greedy, nearest first).

A label is an interval [start, end] (a click's end may equal its start); a detection at time t
is ``max(start - t, 0, t - end)`` away from it, so a crepitus train matches a detection anywhere
inside it, and a click matches within ``tolerance_s`` of its onset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MatchResult:
    pairs: list[tuple[int, int]]  # (detected index, truth index)
    false_positives: list[int]  # detected indices with no truth within tolerance
    missed: list[int]  # truth indices with no detection within tolerance
    errors_s: np.ndarray  # detected - truth of each pair (s): onset, or interval if longer than the tolerance

    @property
    def precision(self) -> float:
        n = len(self.pairs) + len(self.false_positives)
        return len(self.pairs) / n if n else 1.0

    @property
    def recall(self) -> float:
        n = len(self.pairs) + len(self.missed)
        return len(self.pairs) / n if n else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_events(detected_s: np.ndarray, truth_s: np.ndarray, tolerance_s: float,
                 truth_end_s: np.ndarray | None = None) -> MatchResult:
    """One-to-one matching: closest (detected, truth) pairs first, each used at most once.

    ``truth_s`` are label starts (s); ``truth_end_s`` their ends (default: the starts).
    """
    d, t = np.asarray(detected_s, float).ravel(), np.asarray(truth_s, float).ravel()
    t_end = t if truth_end_s is None else np.maximum(np.asarray(truth_end_s, float).ravel(), t)
    if d.size and t.size:
        dist = np.maximum(np.maximum(t[None, :] - d[:, None], 0.0), d[:, None] - t_end[None, :])
        cand = np.argwhere(dist <= tolerance_s)
        order = np.argsort(dist[cand[:, 0], cand[:, 1]], kind="stable")
    else:
        cand, order = np.empty((0, 2), int), np.empty(0, int)
    used_d, used_t, pairs = set(), set(), []
    for i, j in cand[order]:
        if i not in used_d and j not in used_t:
            used_d.add(int(i))
            used_t.add(int(j))
            pairs.append((int(i), int(j)))
    pairs.sort()
    # Timing error: from the onset for short labels (a click), from the interval for long ones
    # (a crepitus train: any time inside it is right).
    long = (t_end - t) > tolerance_s
    errors = np.array([d[i] - (np.clip(d[i], t[j], t_end[j]) if long[j] else t[j]) for i, j in pairs])
    return MatchResult(pairs, [i for i in range(d.size) if i not in used_d],
                       [j for j in range(t.size) if j not in used_t], errors)
