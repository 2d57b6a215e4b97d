"""The session report as one HTML page: plain HTML and inline CSS, no script, no network.

Figures are ``<img>`` elements: a path relative to the page (the PNGs sit next to it) or, embedded, a base64
``data:`` URI. Every number a test or a tool may want to read back carries ``data-figure="KEY"`` and
``data-value="VALUE"`` (the exact figure; the text shows it rounded for people).
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from analysis.evaluation_metrics import ANGLES, EVENT_TYPES, SOUND_TYPES, Score
from analysis.report_data import EVENT_ORDER, JointReport, SessionReport
from jointmon import __version__
from jointmon.messages import NOT_A_DIAGNOSIS

LEVEL_CLASS = {"benign": "benign", "watch": "watch", "seek evaluation": "seek", None: "unknown"}
UNITS = {"click": "dB", "snap": "dB", "crepitus": "dB", "valgus": "deg", "instability": "deg", "locking": "deg",
         "rep": "deg"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1050px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #ddd; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grade { padding: 0.8em 1em; border-radius: 6px; margin: 1em 0; }
.grade .level { font-size: 1.3em; font-weight: bold; text-transform: uppercase; }
.benign { background: #e8f6ec; } .watch { background: #fff4d6; } .seek { background: #fde2e0; }
.unknown { background: #f0f0f0; color: #555; }
td.benign, td.watch, td.seek, td.unknown { font-weight: bold; }
.disclaimer { font-style: italic; color: #444; }
.meta { color: #555; } .note { color: #7a5b00; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fig_value(key: str, value: object, text: str | None = None, cls: str = "num", tag: str = "td") -> str:
    """A cell (or span) holding one figure: exact value in data-value, rounded text for people."""
    v = "" if value is None else value
    shown = text if text is not None else ("-" if value is None else str(value))
    return f'<{tag} class="{cls}" data-figure="{_e(key)}" data-value="{_e(v)}">{_e(shown)}</{tag}>'


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _table(head: Iterable[str], rows: Iterable[str]) -> str:
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _img(path: Path, out_dir: Path, embed: bool, alt: str) -> str:
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = path.relative_to(out_dir).as_posix()
    return f'<img src="{_e(src)}" alt="{_e(alt)}">'


def _when(origin_ns: int) -> str:
    # Session folders without a start time use t = 0 (1970): no date to show then.
    if origin_ns < 10**17:
        return "date not recorded"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(origin_ns / 1e9))


def render(report: SessionReport, figures: Mapping[tuple[str, str], Mapping[str, Path]], out_dir: Path,
           embed: bool = False) -> str:
    """The whole page. ``figures[(athlete, joint)]`` = {"angles" | "sounds" | "rom": PNG path inside out_dir}."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>Session report {_e(report.session)}</title><style>{CSS}</style></head><body>",
             f"<h1>Session report: {_e(report.session)}</h1>",
             f'<p class="meta">Source: <code>{_e(report.source)}</code> &middot; written by jointmon {__version__} '
             f"&middot; {len(report.joints)} joint(s)</p>",
             f'<p class="disclaimer">{_e(NOT_A_DIAGNOSIS)}</p>']
    parts += [f'<p class="note">Note: {_e(n)}</p>' for n in report.notes]
    if report.problems:
        parts.append(f'<p class="note">Data path problems (counted drops): {_e(report.problems)}</p>')
    parts.append("<h2>Session summary</h2>")
    head = ["athlete", "joint", "grade", "duration (s)", *(t if t != "rep" else "reps" for t in EVENT_ORDER)]
    rows = [f"<tr><td>{_e(j.athlete)}</td><td>{_e(j.joint)}</td><td class=\"{LEVEL_CLASS[j.grade.grade]}\">"
            f"{_e(j.grade.grade)}</td><td class=\"num\">{j.duration_s:.1f}</td>"
            + "".join(_fig_value(f"{j.athlete}/{j.joint}/count/{t}", j.counts.get(t, 0)) for t in EVENT_ORDER)
            + "</tr>" for j in report.joints]
    if len(report.joints) > 1:
        c = report.counts
        rows.append('<tr><th colspan="4">all joints</th>'
                    + "".join(_fig_value(f"session/count/{t}", c.get(t, 0)) for t in EVENT_ORDER) + "</tr>")
    parts.append(_table(head, rows))
    for j in report.joints:
        parts.append(_joint_section(j, figures.get((j.athlete, j.joint), {}), out_dir, embed))
    if report.has_labels and report.score is not None and len(report.joints) > 1:
        parts.append(_score_section(report.score, "session/score", "All joints against the labels"))
    parts.append(f'<hr><p class="disclaimer">{_e(NOT_A_DIAGNOSIS)} Pain and swelling can only be told by the athlete; '
                 "athlete ids are pseudonyms (this is health data).</p></body></html>\n")
    return "\n".join(parts)


def _joint_section(j: JointReport, figs: Mapping[str, Path], out_dir: Path, embed: bool) -> str:
    key = f"{j.athlete}/{j.joint}"
    g = j.grade
    out = [f"<h2>{_e(j.athlete)} &middot; {_e(j.joint)}</h2>",
           f'<p class="meta">Session {_e(j.session)} &middot; {_e(_when(j.origin_ns))} &middot; '
           f"{j.duration_s:.1f} s analysed{' (estimated)' if j.duration_estimated else ''}</p>",
           f'<div class="grade {LEVEL_CLASS[g.grade]}"><span class="level" data-figure="{_e(key)}/grade" '
           f'data-value="{_e(g.grade)}">{_e(g.grade)}</span><ul>'
           + "".join(f"<li>{_e(r.text)}</li>" for r in g.reasons) + "</ul>"
           f'<p class="disclaimer">{_e(g.disclaimer)}</p></div>']

    out.append("<h3>Red-flag checklist</h3>")
    rows = []
    for row in j.checklist():
        sign_key = row.sign.replace(" ", "_")
        level = row.level or "not reported"
        why = "<br>".join(_e(t) for t in row.reasons)
        rows.append(f"<tr><th>{_e(row.sign)}</th><td>{_e(row.source)}</td>"
                    + _fig_value(f"{key}/checklist/{sign_key}", row.found, cls="")
                    + f'<td class="{LEVEL_CLASS[row.level]}" data-figure="{_e(key)}/checklist/{sign_key}/level" '
                    f'data-value="{_e(level)}">{_e(level)}</td>'
                    f"<td>{_e(row.benign)}</td><td>{_e(row.concerning)}</td><td>{why}</td></tr>")
    out.append(_table(["sign", "how known", "this session", "grade", "likely benign", "concerning: seek evaluation",
                       "reasons"], rows))

    rom = j.rom_summary()
    usual, where = j.usual_rom()
    out.append("<h3>Figures of the session</h3>")
    median = rom[0] if rom else None
    usual_text = _fmt(usual) + (f" ({where})" if usual is not None else "")
    rate = _fig_value(f"{key}/sound_rate_per_min", j.sound_rate_per_min, _fmt(j.sound_rate_per_min, 2))
    rows = [f"<tr><th>joint sounds (click + snap + crepitus)</th>{_fig_value(f'{key}/sounds', j.sounds)}</tr>",
            f"<tr><th>joint sounds per minute</th>{rate}</tr>",
             f"<tr><th>ROM per rep, median (deg)</th>{_fig_value(f'{key}/rom_median_deg', median, _fmt(median))}</tr>",
             f"<tr><th>usual ROM (deg)</th>{_fig_value(f'{key}/usual_rom_deg', usual, usual_text, cls='')}</tr>"]
    out.append(_table(["", "value"], rows))

    captions = {"angles": "Joint angles over time; reps shaded and numbered; for a knee the abduction (valgus "
                          "positive) with valgus onsets dashed and the peak valgus of each rep.",
                "sounds": "Joint sounds over the flexion curve: each event at its time and the joint angle then.",
                "rom": "Range of motion per rep, against the usual range and the restricted-range line."}
    for name, path in figs.items():
        out.append(f"<figure>{_img(path, out_dir, embed, f'{name} of {key}')}"
                   f"<figcaption>{_e(captions.get(name, name))}</figcaption></figure>")

    out.append("<h3>Reps</h3>")
    reps = j.reps()
    if reps:
        angle = "flexion" if j.kind == "knee" else "angle"
        head = ["rep", "start (s)", "end (s)", f"peak {angle} (deg)", "most extended (deg)", "ROM (deg)",
                "peak valgus (deg)", "FPPA (deg)", *SOUND_TYPES, "valgus", "instability", "locking"]
        rows = []
        for r in reps:
            k = f"{key}/rep/{r.index}"
            cells = [f'<td class="num">{r.index}</td>', f'<td class="num">{r.t_start_s:.2f}</td>',
                     f'<td class="num">{r.t_end_s:.2f}</td>',
                     _fig_value(f"{k}/peak_deg", r.peak_deg, _fmt(r.peak_deg)),
                     _fig_value(f"{k}/min_deg", r.min_deg, _fmt(r.min_deg)),
                     _fig_value(f"{k}/rom_deg", r.rom_deg, _fmt(r.rom_deg)),
                     _fig_value(f"{k}/peak_valgus_deg", r.peak_valgus_deg, _fmt(r.peak_valgus_deg)),
                     _fig_value(f"{k}/fppa_deg", r.fppa_deg, _fmt(r.fppa_deg)),
                     *(_fig_value(f"{k}/{t}", r.events.get(t, 0)) for t in
                       (*SOUND_TYPES, "valgus", "instability", "locking"))]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        out.append(_table(head, rows))
        between = sum(1 for e, i in zip(j.events, j.rep_of_events(), strict=True) if i is None and e.type != "rep")
        out.append(f"<p>{between} event(s) between reps (in the timeline below).</p>")
    else:
        out.append("<p>No reps in this session.</p>")

    out.append("<h3>Event timeline</h3>")
    found = [(e, i) for e, i in zip(j.events, j.rep_of_events(), strict=True) if e.type != "rep"]
    if found:
        rep_no = {None: "-", **{k: str(r.index) for k, r in enumerate(reps)}}
        rows = [f'<tr><td class="num">{j.event_t_s(e):.3f}</td><td>{_e(e.type)}</td>'
                f'<td class="num">{_fmt(j.angle_at(e))}</td>'
                f'<td class="num">{e.magnitude:.1f} {UNITS.get(e.type, "")}</td>'
                f'<td class="num">{e.confidence:.2f}</td><td class="num">{rep_no[i]}</td></tr>'
                for e, i in found]
        out.append(_table(["t (s)", "event", "angle (deg)", "magnitude", "confidence", "rep"], rows))
    else:
        out.append("<p>No events besides the reps.</p>")
    if j.score is not None:
        out.append(_score_section(j.score, f"{key}/score"))
    return "\n".join(out)


def _score_section(score: Score, key: str, title: str = "Against the labels (evaluation harness)") -> str:
    """Against the labels (a simulated or annotated session): the evaluation harness's figures."""
    d = score.as_dict()
    rows = []
    for t in EVENT_TYPES:
        s = d["events"][t]
        labelled = _fig_value(f"{key}/{t}/labelled", s["tp"] + s["fn"])
        rows.append(f"<tr><th>{_e(t)}</th>{labelled}"
                    + "".join(_fig_value(f"{key}/{t}/{m}", s[m]) for m in ("tp", "fp", "fn"))
                    + "".join(_fig_value(f"{key}/{t}/{m}", s[m], _fmt(s[m], 2)) for m in ("precision", "recall"))
                    + "</tr>")
    out = [f"<h3>{_e(title)}</h3>",
           _table(["event", "labelled", "matched", "false alarms", "missed", "precision", "recall"], rows)]
    rmse = [f"<tr><th>{_e(a.replace('_deg', ''))}</th>"
            + _fig_value(f"{key}/rmse/{a}", d["angle_rmse_deg"][a], _fmt(d["angle_rmse_deg"][a], 2))
            + _fig_value(f"{key}/rmse_samples/{a}", d["angle_samples"][a]) + "</tr>"
            for a in ANGLES if d["angle_rmse_deg"][a] is not None]
    if rmse:
        out.append(_table(["angle", "RMSE against the truth (deg)", "samples"], rmse))
    return "\n".join(out)
