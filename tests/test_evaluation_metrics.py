"""Scoring numbers on hand-made truth and detections."""

import numpy as np

from analysis.evaluation_metrics import Score, format_table, score_session


def lab(t, start, end=None):
    return {"type": t, "t_start_s": start, "t_end_s": start if end is None else end}


def ev(t, at):
    return {"type": t, "t_s": at}


def test_counts_confusion_and_timing():
    labels = [lab("click", 1.0), lab("click", 5.0), lab("snap", 2.0), lab("crepitus", 3.0, 3.6),
              lab("instability", 8.0, 8.2)]
    events = [ev("click", 1.005), ev("snap", 5.001),  # second click mis-classified as snap
              ev("snap", 2.010), ev("crepitus", 3.3), ev("click", 7.0),  # 7.0: a false click
              ev("instability", 8.25)]
    s = score_session(labels, events, duration_s=600.0)
    assert (s.by_type["click"].tp, s.by_type["click"].fp, s.by_type["click"].fn) == (1, 1, 1)
    assert (s.by_type["snap"].tp, s.by_type["snap"].fp) == (1, 1)
    assert s.by_type["crepitus"].tp == 1
    assert (s.sound_detection.tp, s.sound_detection.fp, s.sound_detection.fn) == (4, 1, 0)
    assert s.confusion[("click", "snap")] == 1 and s.confusion[("none", "click")] == 1
    assert s.classification_accuracy == 0.75
    assert s.by_type["instability"].tp == 1 and s.false_alarms_per_10min("instability") == 0.0
    assert s.false_alarms_per_10min("click") == 1.0
    np.testing.assert_allclose(sorted(np.abs(s.by_type["click"].errors_s)), [0.005], atol=1e-12)


def test_angle_rmse_and_aggregation():
    t = np.linspace(0, 10, 1001)
    truth = {"flexion_deg": 50 + 40 * np.sin(t)}
    est = {"flexion_deg": truth["flexion_deg"] + 2.0}  # constant 2 deg error
    s1 = score_session([], [], 10.0, t, truth, t, est)
    assert abs(s1.angle_rmse("flexion_deg") - 2.0) < 1e-9
    assert np.isnan(s1.angle_rmse("abduction_deg"))
    s2 = score_session([], [], 10.0, t, truth, t, {"flexion_deg": truth["flexion_deg"] - 4.0})
    total = Score()
    total.add(s1)
    total.add(s2)
    assert total.sessions == 2 and total.duration_s == 20.0
    assert abs(total.angle_rmse("flexion_deg") - np.sqrt(10.0)) < 1e-9  # pooled over samples
    text = format_table(total)
    assert "flexion RMSE: 3.16 deg" in text and "abduction RMSE: n/a" in text
    d = total.as_dict()
    assert d["angle_rmse_deg"]["flexion_deg"] == round(np.sqrt(10.0), 4)
