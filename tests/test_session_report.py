"""Session report (``jointmon report SESSION``): it renders for a simulated session, its PNGs are real PNGs the page
references, its numbers are the evaluation harness's, the checklist tells self-reported from not reported, and a
bad SESSION is a clear error."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from analysis.evaluation import SessionEvaluation, evaluate_session
from analysis.evaluation_metrics import ANGLES, EVENT_TYPES
from analysis.grading import ReportArgs
from analysis.offline import OfflineResult, analyze_path, write_json_lines
from analysis.report_data import EVENT_ORDER, report_from_offline, report_from_results
from analysis.result_sink import JointKey
from analysis.results_store import SqliteResults
from analysis.session_report import main, write_report
from firmware_sim.scenario import scenario_from_dict
from firmware_sim.session import simulate_session
from sensor_gateway.recorder import record_simulated_session

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A 24 s knee session with every kind of finding: clicks and snaps, valgus on reps 2-3, a giving-way episode,
# a knee that will not straighten on rep 6 (not rep 5: its giving way at 15 s would hide it). Short, so that
# three analyses of it stay within a few seconds each.
SCENARIO = {"seed": 5, "duration_s": 24.0, "athlete": "ath-007", "joint": "right_knee", "exercise": "bodyweight_squat",
            "mounting": {"misalignment_deg": 5.0},
            "sounds": {"clicks": 3, "snr_db": 16.0, "snaps": {"angle_deg": [55.0, 65.0], "probability": 0.5}},
            "events": {"valgus": {"reps": [2, 3], "magnitude_deg": 12.0}, "instability": {"times_s": [15.0]},
                       "locking": {"reps": [6], "mode": "extension", "short_deg": 25.0, "hold_s": 2.0}}}
KEY = "ath-007/right_knee"


class _Page(HTMLParser):
    """The figures (data-figure -> data-value) and image sources of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.images: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-figure"):
            assert a["data-figure"] not in self.figures, f"figure {a['data-figure']} twice"
            self.figures[a["data-figure"]] = a.get("data-value") or ""
        if tag == "img":
            self.images.append(a["src"] or "")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "squats.jmrec"
    record_simulated_session(simulate_session(scenario_from_dict(SCENARIO)), path)
    return path


@pytest.fixture(scope="module")
def harness(recording: Path) -> SessionEvaluation:
    return evaluate_session(recording)


@pytest.fixture(scope="module")
def result(recording: Path) -> OfflineResult:
    return analyze_path(recording)


@pytest.fixture(scope="module")
def cli_report(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _Page, str]:
    """The command run as a user runs it: analyses the recording itself, with a self-report."""
    out = tmp_path_factory.mktemp("cli") / "out"
    proc = subprocess.run([sys.executable, "-m", "analysis.session_report", str(recording), "--out", str(out),
                           "--no-history", "--pain", "3", "--swelling", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    page = out / "report.html"
    return out, _Page(page.read_text(encoding="utf-8")), proc.stdout


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND", f"{path.name} is truncated"
    return struct.unpack(">II", data[16:24])


def test_every_figure_is_a_sane_png_the_page_references(cli_report):
    out, page, stdout = cli_report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"ath-007_right_knee_{n}.png" for n in ("angles", "sounds", "rom"))
    for name in pngs:
        w, h = png_size(out / name)
        assert 600 <= w <= 2000 and 250 <= h <= 1500, (name, w, h)
        assert 10_000 < (out / name).stat().st_size < 2_000_000  # drawn, not blank
    assert sorted(page.images) == pngs  # referenced relatively, each once, nothing else (no network)
    assert f"report written to {out / 'report.html'}" in stdout


def test_counts_scores_and_rmse_are_the_harness_figures(cli_report, harness):
    _, page, _ = cli_report
    f = page.figures
    counts = {t: int(f[f"{KEY}/count/{t}"]) for t in EVENT_ORDER}
    assert Counter({t: n for t, n in counts.items() if n}) == harness.detected
    # The scenario's findings are all there (so the comparison above compares something).
    assert counts["rep"] >= 5 and counts["click"] + counts["snap"] >= 2 and counts["instability"] >= 1
    assert counts["valgus"] >= 1 and counts["locking"] >= 1
    assert int(f[f"{KEY}/sounds"]) == sum(harness.detected[t] for t in ("click", "snap", "crepitus"))
    want = harness.score.as_dict()
    for t in EVENT_TYPES:
        for m in ("tp", "fp", "fn"):
            assert int(f[f"{KEY}/score/{t}/{m}"]) == want["events"][t][m], (t, m)
        assert int(f[f"{KEY}/score/{t}/labelled"]) == harness.labels[t], t
    shown = [a for a in ANGLES if f"{KEY}/score/rmse/{a}" in f]
    assert shown == ["flexion_deg", "abduction_deg"]  # a knee: both scored angles, against the recording's truth
    for a in shown:
        assert float(f[f"{KEY}/score/rmse/{a}"]) == want["angle_rmse_deg"][a]
        assert int(f[f"{KEY}/score/rmse_samples/{a}"]) == want["angle_samples"][a] > 500


def test_reps_table_holds_the_analysis_reps(cli_report, result):
    _, page, _ = cli_report
    (key, reps), = result.reps.items()
    truth = result.extra["recording"].truth
    for rep in reps:
        k = f"{KEY}/rep/{rep.index}"
        assert float(page.figures[f"{k}/rom_deg"]) == round(rep.rom_deg, 1)
        assert float(page.figures[f"{k}/peak_deg"]) == pytest.approx(rep.peak_flexion_deg)
        # ... and the analysis's peak is the true one within a couple of degrees.
        inside = (truth["t_s"] >= (rep.t_start_ns - result.origin_ns) / 1e9) & \
                 (truth["t_s"] <= (rep.t_end_ns - result.origin_ns) / 1e9)
        assert abs(rep.peak_flexion_deg - truth["flexion_deg"][inside].max()) < 3.0
    rom = [r.rom_deg for r in reps]
    assert float(page.figures[f"{KEY}/rom_median_deg"]) == pytest.approx(np.median([round(x, 1) for x in rom]))
    # Sounds per rep: each sound counted in the rep it falls in, none lost.
    sounds = sum(int(page.figures[f"{KEY}/rep/{r.index}/{t}"]) for r in reps for t in ("click", "snap", "crepitus"))
    between = [e for e in result.events if e.type in ("click", "snap", "crepitus")
               and not any(r.t_start_ns <= e.t_ns <= r.t_end_ns for r in reps)]
    assert sounds + len(between) == int(page.figures[f"{KEY}/sounds"])


def test_checklist_self_report_given(cli_report):
    _, page, _ = cli_report
    f = page.figures
    assert f[f"{KEY}/checklist/pain"] == "3/10" and f[f"{KEY}/checklist/pain/level"] == "seek evaluation"
    assert f[f"{KEY}/checklist/swelling"] == "yes" and f[f"{KEY}/checklist/swelling/level"] == "seek evaluation"
    assert f[f"{KEY}/checklist/instability"].startswith("1 giving-way episode measured")
    assert f[f"{KEY}/checklist/instability/level"] == "seek evaluation"
    assert f[f"{KEY}/grade"] == "seek evaluation"


def test_checklist_not_reported_and_other_sources(result, harness, tmp_path):
    """In process, from the same analysis: no self-report; the same session from JSON lines and a results file."""
    report = report_from_offline(result, ReportArgs(), None)
    page_path = write_report(report, tmp_path / "plain", embed=True)
    page = _Page(page_path.read_text(encoding="utf-8"))
    f = page.figures
    for sign in ("pain", "swelling", "after_an_injury"):
        assert f[f"{KEY}/checklist/{sign}"] == "not reported" and f[f"{KEY}/checklist/{sign}/level"] == "not reported"
    assert "jointmon measures and grades against red flags; this is not a diagnosis." in page_path.read_text()
    # Embedded: the same PNG bytes inline as in the files.
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
    assert {base64.b64decode(s.split(",", 1)[1]) for s in page.images} == \
           {p.read_bytes() for p in (tmp_path / "plain").glob("*.png")}

    # JSON lines (events only) and a SQLite results file give the same counts and reps.
    jsonl = tmp_path / "events.jsonl"
    with jsonl.open("w") as out:
        write_json_lines(result, out)
    db = SqliteResults(tmp_path / "analysis.sqlite")
    (athlete, joint), (t_ns, angles) = next(iter(result.angles.items()))
    db.angles(JointKey(athlete, joint, result.session), t_ns, angles)
    for e in result.events:
        db.event(e)
    db.close()
    for source in (jsonl, tmp_path / "analysis.sqlite"):
        stored = report_from_results(source, self_report=ReportArgs(pain=0), duration_s=result.duration_s)
        (j,) = stored.joints
        assert Counter(j.counts) == harness.detected
        assert [r.rom_deg for r in j.reps()] == [r.rom_deg for r in report.joints[0].reps()]
        assert j.checklist()[0].found == "0/10" and j.checklist()[0].level == "benign"
        assert bool(j.angles) == (source.suffix == ".sqlite")
        if j.angles:  # a results file's session starts at its first angle sample: within a sample of t0
            np.testing.assert_allclose(j.t_s, report.joints[0].t_s, atol=0.02)
    # Rendered from the results file: all three figures (angles from the file), the same counts.
    page = _Page(write_report(stored, tmp_path / "from_sqlite").read_text(encoding="utf-8"))
    assert len(page.images) == 3
    assert {t: int(page.figures[f"{KEY}/count/{t}"]) for t in EVENT_ORDER} == \
           {t: harness.detected[t] for t in EVENT_ORDER}


@pytest.mark.parametrize("make", [lambda d: d / "missing.jmrec", lambda d: d, lambda d: d / "notes.txt"],
                         ids=["missing", "folder-without-session.toml", "other-file"])
def test_bad_session_is_a_clear_error(tmp_path, capsys, make):
    (tmp_path / "notes.txt").write_text("hello\n")
    path = make(tmp_path)
    code = main([str(path), "--out", str(tmp_path / "out"), "--no-history", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jointmon report: error: ") and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.html").exists()


def test_help_names_the_options():
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
