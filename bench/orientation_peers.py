"""jointmon's orientation stage against open 6D filters on BROAD: inclination RMSE and speed.

    python bench/orientation_peers.py [FILE.mat ...] [--methods vqf,imufusion,...] [--align]

Runs every method on the same IMU data (6D: gyroscope + accelerometer, no magnetometer) of each
trial and prints a table: one row per trial, one column per method, inclination RMSE in deg
(BROAD definition, movement phases only; see ``bench/orientation_broad.py``), then the mean row
and each method's throughput in samples per second. Without files it runs every .mat in
``<repo>/../shared/data/broad``. The peers come from the optional extra: ``pip install -e '.[bench]'``.

Methods and settings (each library's own defaults or documented example values; none tuned here):

* ``vqf``: ``vqf.VQF(1/rate)``, default parameters, ``updateBatch``, ``quat6D`` (Laidig & Seel 2023).
* ``imufusion``: x-io Fusion AHRS (``imufusion.Ahrs``), ``update_no_magnetometer`` per sample;
  ``AhrsSettings(sample_rate, convention=ENU, gain=0.5, gyroscope_range=2000 deg/s,
  acceleration_rejection=10 deg, magnetic_rejection=0, rejection_timeout=5 s)``, the gain,
  range, rejection and timeout values of Fusion's own examples, with its gyroscope bias
  estimator ``imufusion.Bias`` at default settings in front, as in those examples.
* ``madgwick``: ``ahrs.filters.Madgwick`` (IMU update), library default ``gain=0.033``
  (Madgwick's suggested beta for 6D), initial orientation from the first accelerometer sample.
* ``mahony``: ``ahrs.filters.Mahony`` (IMU update), library defaults ``k_P=1.0``, ``k_I=0.3``,
  initial orientation from the first accelerometer sample.
* ``mahony_broad``: the same with the gains the BROAD paper's case study found best over all 39
  BROAD trials (``Kp=0.74``, ``Ki=0.0012``, its TAGP), because the library's integral gain turns
  linear acceleration into a "gyro bias" on these data. (Madgwick's BROAD TAGP, beta=0.12, was
  chosen for 9D and is worse than the library default here: 2.73 vs 2.09 deg mean.)
* ``jointmon``: ``analysis.orientation.SegmentOrientation`` (VQF defaults + the BROAD IMU's
  gyroscope latency compensated), exactly as ``bench/orientation_broad.py`` runs it.

``ahrs`` is pure Python (one interpreted step per sample), so its speed is not comparable with
the compiled cores; the table shows it anyway.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.orientation_broad import (  # noqa: E402
    BROAD_DIR,
    BROAD_GYRO_DELAY_S,
    Trial,
    default_files,
    inclination_rmse_deg,
    load_trial,
    run_jointmon,
)

Runner = Callable[[Trial], np.ndarray]  # trial -> (n, 4) quaternions, IMU -> earth, w x y z


def run_vqf(trial: Trial) -> np.ndarray:
    from vqf import VQF

    return VQF(1.0 / trial.rate_hz).updateBatch(trial.gyr, trial.acc)["quat6D"]


def run_imufusion(trial: Trial) -> np.ndarray:
    import imufusion

    ahrs = imufusion.Ahrs()
    ahrs.set_settings(imufusion.AhrsSettings(
        sample_rate=trial.rate_hz, convention=imufusion.CONVENTION_ENU, gain=0.5, gyroscope_range=2000.0,
        acceleration_rejection=10.0, magnetic_rejection=0.0, rejection_timeout=5.0))
    bias = imufusion.Bias()
    bias.set_settings(imufusion.BiasSettings(sample_rate=trial.rate_hz))
    gyro_dps, acc_g = np.rad2deg(trial.gyr), trial.acc / 9.80665  # Fusion's units
    out = np.empty((len(gyro_dps), 4))
    for k in range(len(gyro_dps)):  # the binding is per sample
        ahrs.update_no_magnetometer(bias.update(gyro_dps[k]), acc_g[k])
        out[k] = ahrs.get_quaternion()
    return out


def run_madgwick(trial: Trial) -> np.ndarray:
    from ahrs.filters import Madgwick

    return Madgwick(gyr=trial.gyr, acc=trial.acc, frequency=trial.rate_hz).Q


def run_mahony(trial: Trial) -> np.ndarray:
    from ahrs.filters import Mahony

    return Mahony(gyr=trial.gyr, acc=trial.acc, frequency=trial.rate_hz).Q


def run_mahony_broad(trial: Trial) -> np.ndarray:
    from ahrs.filters import Mahony

    return Mahony(gyr=trial.gyr, acc=trial.acc, frequency=trial.rate_hz, k_P=0.74, k_I=0.0012).Q


def run_jointmon_stage(trial: Trial) -> np.ndarray:
    return run_jointmon(trial, BROAD_GYRO_DELAY_S)[0]


METHODS: dict[str, tuple[Runner, str]] = {
    "vqf": (run_vqf, "vqf"),
    "imufusion": (run_imufusion, "imufusion"),
    "madgwick": (run_madgwick, "ahrs"),
    "mahony": (run_mahony, "ahrs"),
    "mahony_broad": (run_mahony_broad, "ahrs"),
    "jointmon": (run_jointmon_stage, "vqf"),
}


def available(methods: list[str]) -> list[str]:
    """The methods whose package imports; the others are reported on stderr and left out."""
    import importlib

    ok = []
    for m in methods:
        try:
            importlib.import_module(METHODS[m][1])
        except ImportError:
            print(f"{m}: package {METHODS[m][1]!r} missing (pip install -e '.[bench]'), left out", file=sys.stderr)
            continue
        ok.append(m)
    return ok


def format_table(names: list[str], methods: list[str], rmse: np.ndarray, speed: dict[str, float]) -> str:
    """Rows: trials, mean, samples/s; columns: methods. ``rmse`` is (trials, methods) in deg."""
    width = max([len(n) for n in names] + [len("samples/s")])
    cols = [max(len(m), 10) for m in methods]

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))

    header = row("trial", methods)
    lines = ["inclination RMSE (deg), BROAD definition, movement phases only", header, "-" * len(header)]
    lines += [row(name, [f"{v:.3f}" for v in values]) for name, values in zip(names, rmse, strict=True)]
    lines.append("-" * len(header))
    lines.append(row("mean", [f"{v:.3f}" for v in rmse.mean(axis=0)]))
    lines.append(row("samples/s", [f"{speed[m]:.0f}" for m in methods]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare jointmon's orientation stage with vqf, imufusion and ahrs (Madgwick, Mahony) on BROAD "
                    "trials, 6D: a table of inclination RMSE (deg) per trial and method, the mean, and samples/s.")
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE.mat",
                        help=f"BROAD trials (default: every .mat in {BROAD_DIR})")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of: %(default)s")
    parser.add_argument("--align", action="store_true",
                        help="estimate and remove a constant IMU-to-marker rotation and earth tilt per trial "
                             "(not BROAD's definition; see bench/orientation_broad.py)")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    methods = available(methods)
    if not methods:
        parser.error("no method available")
    files = args.files or default_files()
    if not files:
        parser.error(f"no files given and none found in {BROAD_DIR}")

    names: list[str] = []
    rmse = np.zeros((len(files), len(methods)))
    seconds = dict.fromkeys(methods, 0.0)
    samples = 0
    for i, path in enumerate(files):
        trial = load_trial(path)
        names.append(trial.name)
        samples += len(trial.gyr)
        for j, m in enumerate(methods):
            t0 = time.perf_counter()
            quat = METHODS[m][0](trial)
            seconds[m] += time.perf_counter() - t0
            rmse[i, j] = inclination_rmse_deg(quat, trial.quat_ref, trial.movement, align=args.align)
        print(f"{trial.name}: " + ", ".join(f"{m} {v:.3f}" for m, v in zip(methods, rmse[i], strict=True)),
              file=sys.stderr, flush=True)
    speed = {m: samples / seconds[m] for m in methods}
    print(format_table(names, methods, rmse, speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
