"""``jointmon report SESSION``: an HTML report with PNG figures of one session, for a physical therapist reviewing
it afterwards (``docs/session-report.md``).

SESSION is what ``jointmon analyze PATH`` takes (a ``.jmrec`` recording or a session folder: analysed here with
the live analysis code, with a progress bar), or the stored results of an earlier run (a SQLite results file such
as ``results/analysis.sqlite``, or JSON lines from ``jointmon analyze PATH --out FILE``: events only, no angle
curves). Writes ``OUT/report.html`` and its figures ``OUT/*.png`` next to it (referenced relatively; ``--embed``
also inlines them as base64 so the page alone is enough).

This module is the command (:func:`add_report_parser`, :func:`run_report`) and the orchestration; it imports the
analysis only when run, so that building the CLI parser stays fast. Data: :mod:`analysis.report_data`; figures:
:mod:`analysis.report_plots`; page: :mod:`analysis.report_html`.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jointmon.errors import JointmonError

if TYPE_CHECKING:
    from analysis.grading import ReportArgs
    from analysis.report_data import SessionReport

DEFAULT_OUT_ROOT = Path("results/reports")
DEFAULT_HISTORY = Path("results/athlete_history.sqlite")
HTML_NAME = "report.html"


def build_report(session: str | Path, *, self_report: ReportArgs | None = None, history: str | Path | None = None,
                 session_id: str | None = None, athlete: str | None = None, joint: str | None = None,
                 duration_s: float | None = None, usual_rom_deg: float | None = None,
                 progress: bool = False) -> SessionReport:
    """Analyse (or load) ``session`` and build its report.

    ``history``: an athlete-history file for the click-rate trend (read, never written: a report does not add the
    session to it); ``session_id``: which session of a results file; ``athlete``/``joint``: only these joints;
    ``duration_s``: session length for a JSON-lines file (else estimated from its last event); ``usual_rom_deg``:
    the athlete's usual range of motion, if known (deg); ``progress``: a progress bar (stderr) while analysing,
    shown once the analysis takes more than 2 s.
    """
    from analysis.athlete_history import AthleteHistory
    from analysis.offline import RECORDING_SUFFIX
    from analysis.report_data import analyze_with_progress, is_results_file, report_from_offline, report_from_results
    from analysis.session_folder import SESSION_FILE

    p = Path(session)
    if not p.exists():
        raise JointmonError(f"{p}: no such file or folder")
    results = is_results_file(p)
    if p.is_file() and not results and p.suffix != RECORDING_SUFFIX:
        raise JointmonError(f"{p}: not a {RECORDING_SUFFIX} recording, a session folder (a folder with "
                            f"{SESSION_FILE}), a results file (SQLite) or JSON lines of events (.jsonl)")
    hist = None
    if history is not None:
        if not Path(history).is_file():
            raise JointmonError(f"{history}: no such athlete-history file (--no-history to grade without one)")
        hist = AthleteHistory(history)
    now_ns = time.time_ns()
    try:
        if results:
            report = report_from_results(p, session_id, self_report, hist, duration_s=duration_s,
                                         usual_rom_deg=usual_rom_deg, now_ns=now_ns)
        else:
            result = _analyze(p, progress, analyze_with_progress)
            report = report_from_offline(result, self_report, hist, usual_rom_deg=usual_rom_deg, now_ns=now_ns)
    finally:
        if hist is not None:
            hist.close()
    report.joints = [j for j in report.joints if (athlete is None or j.athlete == athlete)
                     and (joint is None or j.joint == joint)]
    if not report.joints:
        raise JointmonError(f"{p}: no analysed joint" + (" for that athlete/joint" if athlete or joint else ""))
    return report


def _analyze(p: Path, progress: bool, analyze: Any) -> Any:
    if not progress:
        return analyze(p)
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, pipes); delay: none for a quick analysis.
    with tqdm(total=0.0, unit="s", desc=f"analysing {p.name}", delay=2.0, leave=False, disable=None,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of session "
                         "[{elapsed}<{remaining}]") as bar:
        def on_progress(done: float, total: float) -> None:
            bar.total = round(total, 1)
            bar.update(round(done, 1) - bar.n)

        return analyze(p, on_progress)


def _file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts))


def write_report(report: SessionReport, out_dir: str | Path, *, embed: bool = False) -> Path:
    """Write the figures (``OUT/{athlete}_{joint}_{angles|sounds|rom}.png``) and ``OUT/report.html``; returns
    the page's path. ``embed``: the page also carries the PNGs as base64 (one file is enough to share)."""
    from analysis.report_html import render
    from analysis.report_plots import FIGURES

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        figures = {(j.athlete, j.joint): {name: plot(j, out / (_file_name(j.athlete, j.joint, name) + ".png"))
                                          for name, plot in FIGURES.items()}
                   for j in report.joints}
        page = out / HTML_NAME
        page.write_text(render(report, figures, out, embed), encoding="utf-8")
    except OSError as exc:
        raise JointmonError(f"{out}: cannot write the report ({exc})") from None
    return page


# ------------------------------------------------------------------------------------------------ command


def _pain(text: str) -> int:
    """``--pain``: a whole number on the 0..10 numeric rating scale (as ``jointmon analyze --pain``)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: pain is a whole number from 0 (none) to 10 (worst)")
    return value


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "y", "true", "1"):
        return True
    if value in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: yes or no")


def _degrees(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 360.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a range of motion in degrees, e.g. 120")
    return value


DESCRIPTION = ("Writes an HTML report of one session with PNG figures, for a physical therapist reviewing it: "
               "joint angles with the reps and valgus per rep, the joint-sound timeline over the flexion curve, "
               "range of motion per rep, the reps table, and the red-flag checklist of the clinical table with what "
               "was measured and what was self-reported, graded benign / watch / seek evaluation with the reasons. "
               "SESSION is a .jmrec recording or a session folder (analysed now), or stored results: a results file "
               "(SQLite, e.g. results/analysis.sqlite) or JSON lines from `jointmon analyze PATH --out FILE`. "
               "jointmon measures and grades; it never diagnoses.")


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report command's arguments to ``p``."""
    p.add_argument("session", metavar="SESSION", help="recording (.jmrec), session folder, results file (.sqlite) or "
                   "events file (.jsonl)")
    p.add_argument("--out", metavar="DIR", help=f"output folder: report.html and the PNG figures [{DEFAULT_OUT_ROOT}/"
                   "<session>]")
    p.add_argument("--embed", action="store_true", help="also embed the figures in report.html (base64), so the page "
                   "alone can be shared; the PNG files are written either way")
    p.add_argument("--session", dest="session_id", metavar="ID", help="the session to report from a results file "
                   "holding several")
    p.add_argument("--athlete", help="only this athlete (pseudonym); the self-report applies to it")
    p.add_argument("--joint", help="only this joint, e.g. left_knee; the self-report applies to it")
    p.add_argument("--duration", type=float, metavar="S", help="session length, s, for a JSON-lines file's click "
                   "rate [estimated from its last event]")
    p.add_argument("--usual-rom", type=_degrees, metavar="DEG", help="the athlete's usual range of motion, deg "
                   "(e.g. from an assessment) [the median of the session's reps]")
    g = p.add_argument_group("self-report (red flags no sensor can measure; 'not reported' when absent)")
    g.add_argument("--pain", type=_pain, metavar="0-10", help="pain during or after the session, 0 (none) to 10")
    g.add_argument("--swelling", type=_yes_no, nargs="?", const=True, metavar="yes|no",
                   help="visible puffiness or warmth of the joint (alone: yes)")
    g.add_argument("--injury", type=_yes_no, nargs="?", const=True, metavar="yes|no",
                   help="the clicking started after an injury (alone: yes)")
    g = p.add_argument_group("click-rate trend")
    g.add_argument("--history", metavar="FILE", help=f"athlete history to judge the trend against, read only "
                   f"[{DEFAULT_HISTORY} if it exists]")
    g.add_argument("--no-history", action="store_true", help="no trend: this session alone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_report_parser(subparsers: Any, name: str = "report") -> argparse.ArgumentParser:
    """Register the command on the ``jointmon`` subparsers; its handler is :func:`run_report`."""
    p = subparsers.add_parser(name, help="HTML session report with PNG figures (angles, valgus per rep, sounds over "
                                         "flexion, ROM, red-flag checklist)", description=DESCRIPTION)
    configure_parser(p)
    p.set_defaults(func=run_report)
    return p


def _history_path(args: argparse.Namespace) -> Path | None:
    if args.no_history:
        return None
    if args.history:
        return Path(args.history)
    return DEFAULT_HISTORY if DEFAULT_HISTORY.is_file() else None


def run_report(args: argparse.Namespace) -> int:
    """``jointmon report SESSION``: build and write the report; print where it is and each joint's grade."""
    from analysis.grading import ReportArgs

    self_report = ReportArgs(args.pain, args.swelling, args.injury, args.joint, args.athlete)
    report = build_report(args.session, self_report=self_report, history=_history_path(args),
                          session_id=args.session_id, athlete=args.athlete, joint=args.joint,
                          duration_s=args.duration, usual_rom_deg=args.usual_rom, progress=not args.no_progress)
    out = Path(args.out) if args.out else DEFAULT_OUT_ROOT / _file_name(report.session)
    page = write_report(report, out, embed=args.embed)
    n_png = 3 * len(report.joints)
    for j in report.joints:
        c = j.counts
        print(f"{j.athlete} {j.joint}: {c['rep']} reps, {j.sounds} joint sounds, {c['valgus']} valgus, "
              f"{c['instability']} instability, {c['locking']} locking; grade {j.grade.grade.upper()}")
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report written to {page} ({n_png} PNG figures next to it{', also embedded' if args.embed else ''})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.session_report SESSION ...`` (the same as ``jointmon report``)."""
    p = configure_parser(argparse.ArgumentParser(prog="jointmon report", description=DESCRIPTION))
    args = p.parse_args(argv)
    try:
        return run_report(args)
    except JointmonError as exc:
        print(f"jointmon report: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
