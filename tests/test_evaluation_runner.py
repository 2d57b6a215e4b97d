"""The evaluation harness end to end (``jointmon eval``): recordings and session folders in, scores out.

Sessions are simulated, recorded through the gateway code and scored; the expected numbers come from
the labels in the files and from what the first-version detectors reach on clean squats (every click
found, knee flexion within a few degrees).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from analysis.evaluation import dataset_sessions, evaluate_dataset, parse_tolerances
from analysis.evaluation_metrics import EVENT_TYPES
from analysis.session_folder import write_session_folder
from firmware_sim.scenario import load_scenario
from firmware_sim.session import simulate_session, simulate_squat_session
from jointmon.errors import JointmonError
from jointmon.recording import read_recording
from sensor_gateway.recorder import record_simulated_session

LUNGE_TOML = """
seed = 5
duration_s = 16.0
joint = "right_knee"
exercise = "forward_lunge"
[sounds]
snr_db = 6.0
clicks = 2
click_refractory_s = 3.0
crepitus = { range_deg = [30.0, 80.0], level = 0.4 }
[events]
valgus = { reps = [2], magnitude_deg = 14.0 }
[link]
drop_rate = 0.01
clock_drift_ppm = 30.0
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    squats = simulate_squat_session(20.0, seed=2, n_clicks=4)
    record_simulated_session(squats, root / "a_squats.jmrec")
    write_session_folder(root / "c_squats_folder", squats)
    (root / "lunge.toml").write_text(LUNGE_TOML)
    record_simulated_session(simulate_session(load_scenario(root / "lunge.toml")), root / "b_lunge.jmrec")
    (root / "notes.txt").write_text("not a session: ignored")
    return root


def _labels(root: Path) -> Counter[str]:
    return sum((Counter(lb["type"] for lb in read_recording(p).labels) for p in sorted(root.glob("*.jmrec"))),
               Counter())


def test_dataset_discovery(dataset: Path) -> None:
    assert [p.name for p in dataset_sessions(dataset)] == ["a_squats.jmrec", "b_lunge.jmrec", "c_squats_folder"]
    assert dataset_sessions(dataset / "b_lunge.jmrec") == [dataset / "b_lunge.jmrec"]
    assert dataset_sessions(dataset / "c_squats_folder") == [dataset / "c_squats_folder"]


def test_every_label_is_counted_once(dataset: Path) -> None:
    ev = evaluate_dataset(dataset)
    total = ev.total
    assert total.sessions == 3
    assert total.duration_s == pytest.approx(20.0 + 16.0 + 20.0, abs=0.5)
    expected = _labels(dataset)
    expected.update(Counter(lb.type for lb in simulate_squat_session(20.0, seed=2, n_clicks=4).labels))
    assert expected["click"] >= 6 and expected["valgus"] >= 1 and expected["crepitus"] >= 2
    for t in EVENT_TYPES:
        s = total.by_type[t]
        assert s.tp + s.fn == expected[t], t  # every label is matched or missed, none twice
        assert s.tp == sum(x.score.by_type[t].tp for x in ev.sessions)


def test_clean_squats_score_as_the_first_version_detects(dataset: Path) -> None:
    """Recording and session folder of the same squats: all 4 clicks found within 20 ms, flexion within 3 deg."""
    ev = evaluate_dataset(dataset)
    by_name = {s.name: s for s in ev.sessions}
    rec, folder = by_name["a_squats"], by_name["c_squats_folder"]
    for s in (rec, folder):
        clicks = s.score.by_type["click"]
        assert (clicks.tp, clicks.fn) == (4, 0), s.name
        assert max(abs(e) for e in clicks.errors_s) < 0.005
    assert rec.score.angle_rmse("flexion_deg") < 3.0
    assert rec.score.angle_n["flexion_deg"] >= 900  # 50 Hz angle stream over ~20 s
    assert rec.meta["seed"] == 2
    assert folder.score.angle_n["flexion_deg"] == 0  # a session folder carries no angle truth


def test_parallel_equals_serial(dataset: Path) -> None:
    serial = evaluate_dataset(dataset, jobs=1).as_dict()
    parallel = evaluate_dataset(dataset, jobs=2).as_dict()
    assert parallel == serial


def test_tolerance_decides_matching(dataset: Path, tmp_path: Path) -> None:
    """Click labels moved 15 ms late by hand: matched with the 20 ms default, missed with a 10 ms tolerance."""
    folder = tmp_path / "shifted"
    shutil.copytree(dataset / "c_squats_folder", folder)
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    for r in rows:
        if r["type"] == "click":
            r["t_start_s"], r["t_end_s"] = (f"{float(r[k]) + 0.015:.6f}" for k in ("t_end_s", "t_end_s"))
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    wide = evaluate_dataset(folder).total.by_type["click"]
    narrow = evaluate_dataset(folder, tolerance_s=parse_tolerances(["click=10"]))
    assert narrow.tolerance_s["click"] == pytest.approx(0.010)
    assert (wide.tp, wide.fn) == (4, 0)
    assert all(0.010 < e <= 0.020 for e in np.abs(wide.errors_s))
    assert (narrow.total.by_type["click"].tp, narrow.total.by_type["click"].fp) == (0, 4)


def test_cli_prints_table_and_writes_json(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "jointmon.cli", "eval", str(dataset), "--json", str(out),
                           "--no-progress", "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "jointmon-eval" and len(doc["sessions"]) == 3
    lines = proc.stdout.splitlines()
    assert lines[0] == "3 sessions, 0.9 min"
    click_row = next(line for line in lines if line.startswith("click "))
    tp, fp, fn = (int(x) for x in click_row.split()[2:5])
    assert (tp, fp, fn) == tuple(doc["total"]["events"]["click"][k] for k in ("tp", "fp", "fn"))
    assert any(line.startswith("flexion RMSE: ") and "deg over" in line for line in lines)

    proc = subprocess.run([sys.executable, "-m", "jointmon.cli", "eval", str(dataset / "a_squats.jmrec"),
                           "--json", "-", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert doc["total"]["sessions"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--tolerance", "clack=5"], "expected TYPE=MS with TYPE one of click"),
    (["--tolerance", "click=fast"], "'fast' is not a number of milliseconds"),
    (["--tolerance", "click=0"], "must be positive"),
])
def test_cli_bad_tolerance(dataset: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "jointmon.cli", "eval", str(dataset), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(JointmonError, match="no .jmrec recordings or session folders"):
        dataset_sessions(tmp_path)
    with pytest.raises(JointmonError, match="no such file or folder"):
        dataset_sessions(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(JointmonError, match="not a dataset"):
        dataset_sessions(tmp_path / "x.csv")
