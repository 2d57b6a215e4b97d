"""The session report's figures as PNG files (matplotlib, Agg: no display, no pyplot global state).

One function per figure, each taking a :class:`analysis.report_data.JointReport` and a path and returning the path
written. Time axes are session seconds, angles degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.report_data import JointReport, restricted_below
from analysis.valgus_detector import ValgusSettings

DPI = 100
WIDTH_IN = 10.0
REP_SHADE = "#cfe3f7"
SOUND_STYLE = {"click": ("o", "#d62728"), "snap": ("^", "#9467bd"), "crepitus": ("s", "#ff7f0e")}
VALGUS_COLOR = "#c0392b"
LOCK_COLOR = "#8c564b"
ANGLE_LABEL = {"flexion_deg": "knee flexion (deg, 0 = straight)", "elevation_deg": "shoulder elevation (deg)"}


def _figure(height_in: float, rows: int = 1, ratios: list[float] | None = None) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=False, squeeze=False, gridspec_kw={"height_ratios": ratios} if ratios else {})
    return fig, list(axes[:, 0])


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _shade_reps(ax: Axes, j: JointReport, label: bool = True) -> None:
    for r in j.reps():
        ax.axvspan(r.t_start_s, r.t_end_s, color=REP_SHADE, zorder=0, lw=0)
        if label:
            ax.text((r.t_start_s + r.t_end_s) / 2, 1.0, str(r.index), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="#4a6f94")


def _time_axis(ax: Axes, j: JointReport) -> None:
    ax.set_xlim(0.0, max(j.duration_s, 1e-3))
    ax.set_xlabel("session time (s)")
    ax.grid(True, alpha=0.3)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")


def plot_angles(j: JointReport, path: str | Path) -> Path:
    """Joint angles over time with the reps shaded (numbered) and valgus onsets marked; for a knee also the
    abduction (valgus +) with the valgus threshold and a bar chart of the peak valgus of each rep."""
    main = j.main_angle
    knee = j.kind == "knee" and "abduction_deg" in j.angles
    fig, axes = _figure(7.5 if knee else 3.5, 3 if knee else 1, [1.3, 1.0, 0.9] if knee else None)
    valgus = j.of_type("valgus")
    threshold = next((float(e.details["threshold_deg"]) for e in valgus if "threshold_deg" in e.details),
                     ValgusSettings().threshold_deg)
    ax = axes[0]
    _shade_reps(ax, j)
    if main in j.angles:
        ax.plot(j.t_s, j.angles[main], color="#1f4e79", lw=1.2, label=main.replace("_deg", ""))
    else:
        _empty(ax, "no angle series in this source (events only)")
    ax.set_ylabel(ANGLE_LABEL.get(main, f"{main} (deg)"))
    ax.set_title(f"{j.athlete} {j.joint}: angles over time, reps shaded and numbered", loc="left", fontsize=10,
                 pad=14)  # room for the rep numbers
    _time_axis(ax, j)
    if not knee:
        return _save(fig, Path(path))
    for e in valgus:
        for a in axes[:2]:
            a.axvline(j.event_t_s(e), color=VALGUS_COLOR, ls="--", lw=1.0)
    ax = axes[1]
    _shade_reps(ax, j, label=False)
    ab = j.angles["abduction_deg"]
    ax.plot(j.t_s, ab, color="#555555", lw=1.0)
    ax.axhline(threshold, color=VALGUS_COLOR, lw=0.8, ls=":")
    ax.text(0.0, threshold, f" valgus threshold {threshold:g} deg", color=VALGUS_COLOR, fontsize=8, va="bottom",
            transform=ax.get_yaxis_transform())
    known = np.flatnonzero(np.isfinite(ab))
    if known.size and known[0] > 0:  # abduction is unknown until the sensor-to-segment calibration completes
        ax.axvspan(0.0, j.t_s[known[0]], color="#eeeeee", zorder=0, lw=0)
        ax.text(j.t_s[known[0]] / 2, 0.5, "calibrating:\nunknown", transform=ax.get_xaxis_transform(),
                ha="center", va="center", fontsize=8, color="#777777")
    elif not known.size:
        _empty(ax, "abduction unknown (no sensor-to-segment calibration)")
    ax.set_ylabel("knee abduction\n(deg, valgus +)")
    ax.set_title(f"valgus episodes (dashed: onset): {len(valgus)}", loc="left", fontsize=10)
    _time_axis(ax, j)
    _valgus_bars(axes[2], j, threshold)
    return _save(fig, Path(path))


def _valgus_bars(ax: Axes, j: JointReport, threshold: float) -> None:
    reps = j.reps()
    if not reps:
        _empty(ax, "no reps")
        return
    x = np.arange(len(reps))
    peak = np.array([np.nan if r.peak_valgus_deg is None else r.peak_valgus_deg for r in reps])
    colors = [VALGUS_COLOR if r.events.get("valgus") else "#7f8c8d" for r in reps]
    ax.bar(x, np.nan_to_num(peak), color=colors, width=0.6)
    for k, r in enumerate(reps):
        if np.isnan(peak[k]):
            ax.text(k, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="#777777")
        elif r.events.get("valgus"):
            ax.text(k, peak[k], "valgus", ha="center", va="bottom", fontsize=8, color=VALGUS_COLOR)
    ax.axhline(threshold, color=VALGUS_COLOR, lw=0.8, ls=":")
    ax.axhline(0.0, color="#333333", lw=0.6)
    ax.set_ylim(min(np.nanmin(peak, initial=0.0), 0.0) - 1.0, max(np.nanmax(peak, initial=0.0), threshold) * 1.25 + 1.0)
    ax.set_xticks(x, [str(r.index) for r in reps])
    ax.set_xlabel("rep")
    ax.set_ylabel("peak valgus\nper rep (deg)")
    ax.set_title("peak valgus per rep (red: a valgus episode in the rep; n/a: before calibration)", loc="left",
                 fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)


def plot_sounds(j: JointReport, path: str | Path) -> Path:
    """The joint-sound timeline over the flexion curve: each click, snap and crepitus train marked by type at
    its time and the joint angle then; giving way and locking marked too."""
    fig, (ax,) = _figure(4.0)
    _shade_reps(ax, j)
    main = j.main_angle
    if main in j.angles:
        ax.plot(j.t_s, j.angles[main], color="#9aa5b1", lw=1.0, zorder=1)
    n_marked = 0
    for kind, (marker, color) in SOUND_STYLE.items():
        ev = j.of_type(kind)
        pts = [(j.event_t_s(e), j.angle_at(e)) for e in ev]
        pts = [(t, a) for t, a in pts if a is not None]
        n_marked += len(pts)
        if pts:
            t, a = np.array(pts).T
            ax.scatter(t, a, marker=marker, s=60, color=color, edgecolor="black", lw=0.5, zorder=3,
                       label=f"{kind} ({len(ev)})")
    for kind, marker, color in (("instability", "X", "black"), ("locking", "D", LOCK_COLOR)):
        ev = j.of_type(kind)
        pts = [(j.event_t_s(e), j.angle_at(e)) for e in ev]
        pts = [(t, a) for t, a in pts if a is not None]
        if pts:
            t, a = np.array(pts).T
            ax.scatter(t, a, marker=marker, s=55, color=color, zorder=3, label=f"{kind} ({len(ev)})")
    if j.sounds == 0:
        ax.text(0.01, 0.95, "no joint sound in this session", transform=ax.transAxes, va="top", color="#666666")
    elif n_marked < j.sounds:
        ax.text(0.01, 0.95, f"{j.sounds - n_marked} sound(s) at an unknown angle not drawn", transform=ax.transAxes,
                va="top", color="#666666", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_ylabel(ANGLE_LABEL.get(main, "angle (deg)"))
    ax.set_title(f"{j.athlete} {j.joint}: joint sounds over the {main.replace('_deg', '') or 'angle'} curve",
                 loc="left", fontsize=10, pad=14)
    _time_axis(ax, j)
    return _save(fig, Path(path))


def plot_rom(j: JointReport, path: str | Path) -> Path:
    """Range of motion per rep (bars; brown: a locking / restricted-motion episode in the rep) with the usual
    range and the restricted-range line below it."""
    fig, (ax,) = _figure(3.5)
    reps = j.reps()
    usual, where = j.usual_rom()
    ax.set_title(f"{j.athlete} {j.joint}: range of motion per rep", loc="left", fontsize=10)
    if not reps:
        _empty(ax, "no reps in this session")
        return _save(fig, Path(path))
    x = np.arange(len(reps))
    rom = np.array([np.nan if r.rom_deg is None else r.rom_deg for r in reps])
    colors = [LOCK_COLOR if r.events.get("locking") else "#2e86c1" for r in reps]
    ax.bar(x, np.nan_to_num(rom), color=colors, width=0.6)
    for k, v in enumerate(rom):
        ax.text(k, 0.0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.0f}", ha="center", va="bottom",
                fontsize=8)
    if usual is not None:
        short = restricted_below(usual)
        ax.axhline(usual, color="#117a65", lw=1.2, label=f"usual {usual:.0f} deg: {where}")
        ax.axhline(short, color=LOCK_COLOR, lw=1.0, ls="--", label=f"restricted below {short:.0f} deg")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9, ncols=2)
    ax.set_xticks(x, [str(r.index) for r in reps])
    ax.set_xlabel("rep")
    ax.set_ylabel("ROM (deg)")
    ax.set_ylim(0.0, max(np.nanmax(rom, initial=0.0), usual or 0.0) * 1.3 + 1.0)  # room for the legend
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, Path(path))


FIGURES = {"angles": plot_angles, "sounds": plot_sounds, "rom": plot_rom}
