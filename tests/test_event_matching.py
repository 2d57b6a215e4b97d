"""Event matching used by the evaluation harness and the end-to-end tests."""

import numpy as np

from analysis.event_matching import match_events


def test_one_to_one_nearest_first():
    m = match_events([1.000, 1.004, 5.0], [1.003, 3.0], 0.01)
    assert m.pairs == [(1, 0)]  # 1.004 is nearer to 1.003 than 1.000 is
    assert m.false_positives == [0, 2] and m.missed == [1]
    assert m.precision == 1 / 3 and m.recall == 0.5
    assert abs(m.f1 - 0.4) < 1e-12
    np.testing.assert_allclose(m.errors_s, [0.001])


def test_intervals_match_anywhere_inside():
    # A crepitus train 2.0-2.8 s: a detection at 2.5 s is inside it; one at 2.815 s is 15 ms after it.
    m = match_events([2.5, 2.815, 2.9], [2.0], 0.02, truth_end_s=[2.8])
    assert m.pairs == [(0, 0)] and m.false_positives == [1, 2]
    assert m.errors_s.tolist() == [0.0]  # inside the train: no timing error
    m = match_events([2.81], [2.0], 0.02, truth_end_s=[2.8])
    np.testing.assert_allclose(m.errors_s, [0.01])


def test_empty_sides():
    assert match_events([], [], 0.01).f1 == 1.0
    m = match_events([], [1.0], 0.01)
    assert m.recall == 0.0 and m.f1 == 0.0
    assert match_events([1.0], [], 0.01).precision == 0.0
