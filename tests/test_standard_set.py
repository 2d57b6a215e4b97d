"""The standard benchmark set's definition (bench/standard_set.py): what the issue asks the set to mix."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from firmware_sim.exercises import EXERCISES
from firmware_sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]


def test_standard_set_scenarios(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench/standard_set.py"), "--out", str(tmp_path),
                           "--scenarios-only"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("s*.toml"))
    assert len(files) >= 40
    scenarios = [load_scenario(f) for f in files]  # every one loads: a bad key fails here, naming the file
    exercises = Counter(s.exercise for s in scenarios)
    assert set(exercises) == set(EXERCISES)
    assert {s.joint_kind for s in scenarios} == {"knee", "shoulder"}
    assert len({s.profile for s in scenarios}) >= 3
    snr_floor = [min(s.sounds["snr_db"]) for s in scenarios]
    assert min(snr_floor) == 0.0 and max(snr_floor) >= 20.0
    link = [s.link for s in scenarios]
    assert sum(1 for x in link if x.get("drop_rate")) >= 10
    assert sum(1 for x in link if x.get("disconnects")) >= 3
    assert sum(1 for x in link if x.get("reboot_at_s") is not None) >= 3
    assert all(abs(x["clock_drift_ppm"]) <= 50 for x in link)
    kinds = Counter(k for s in scenarios for k in ("valgus", "instability", "locking") if getattr(s.events, k))
    assert min(kinds.values()) >= 5, kinds
    # Deterministic: the same command writes the same bytes.
    again = tmp_path / "again"
    subprocess.run([sys.executable, str(REPO / "bench/standard_set.py"), "--out", str(again), "--scenarios-only"],
                   check=True, capture_output=True, timeout=120)
    assert all((again / f.name).read_bytes() == f.read_bytes() for f in files)
