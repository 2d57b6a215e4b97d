"""Generate the standard benchmark set: labelled sessions mixing exercises, athletes, noise and link faults.

    python bench/standard_set.py [--out bench/data/standard] [--sessions 48] [--duration 60] [--mic-codec adpcm]

Deterministic: session k's scenario is drawn from seed k, so the same command always writes the
same set. Each session is a scenario TOML (readable, editable) and a recording (.jmrec) made by
streaming the simulated sensors through the gateway code. The set is regenerated, not committed
(it is ~5 MB per session minute).

``--mic-codec adpcm`` writes the same sessions with the microphones on IMA ADPCM over the air
(``[link] mic_codec = "adpcm"`` in each scenario file), e.g. into ``bench/data/standard-adpcm``:
``jointmon eval`` on both sets shows what the 4:1 compression costs the detectors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tomli_w

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_sim.exercises import EXERCISES  # noqa: E402 - after the path set-up

KNEE_EXERCISES = ("bodyweight_squat", "loaded_squat", "forward_lunge", "step_down", "running", "leg_swing",
                  "jump_squat", "drop_landing")
SHOULDER_EXERCISES = ("overhead_press", "pull_up")
PROFILES = ("small", "medium", "tall")
# SNR of joint sounds over the background, dB: down to 0 dB as the issue asks.
SNR_LEVELS_DB = (0.0, 5.0, 10.0, 20.0)


def scenario_for(k: int, duration_s: float, mic_codec: str = "pcm16") -> dict:
    """Scenario number ``k`` of the set, as the TOML table a user would write; ``mic_codec`` changes
    nothing but the microphone encoding on the air (the random draws stay the same)."""
    rng = np.random.default_rng(10_000 + k)
    shoulder = k % 6 == 5  # one session in six is a shoulder session
    exercise = SHOULDER_EXERCISES[(k // 6) % 2] if shoulder else KNEE_EXERCISES[k % len(KNEE_EXERCISES)]
    side = "left" if rng.random() < 0.5 else "right"
    joint = f"{side}_{'shoulder' if shoulder else 'knee'}"
    snr = float(SNR_LEVELS_DB[(k // 2) % len(SNR_LEVELS_DB)])
    sounds: dict = {
        "snr_db": [snr, snr + 6.0],
        # Several cavitations per session so detection can be scored; a real joint pops at most
        # once per ~20 min, which the refractory override states openly.
        "clicks": int(rng.integers(2, 6)),
        "click_refractory_s": 5.0,
        "rubbing": float(rng.uniform(0.0, 0.6)),
        "background_level": float(rng.uniform(0.7, 1.5)),
    }
    if rng.random() < 0.5:
        lo = float(rng.uniform(20, 60))
        sounds["snaps"] = {"angle_deg": [lo, lo + 20.0], "probability": float(rng.uniform(0.5, 1.0))}
    if not shoulder and rng.random() < 0.4:
        lo = float(rng.uniform(20, 50))
        sounds["crepitus"] = {"range_deg": [lo, lo + float(rng.uniform(30, 50))], "level": float(rng.uniform(0.2, 0.8))}
    events: dict = {}
    supported = EXERCISES[exercise].events  # what the body model can do with this exercise
    if "valgus" in supported and rng.random() < 0.6:
        reps = sorted({int(r) for r in rng.integers(2, 6, size=3)})
        events["valgus"] = {"reps": reps, "magnitude_deg": float(rng.uniform(8.0, 20.0))}
    if "instability" in supported and rng.random() < 0.5:
        events["instability"] = {"times_s": [float(rng.uniform(0.3, 0.8) * duration_s)]}
    if "locking" in supported and rng.random() < 0.3:
        events["locking"] = {"reps": [int(rng.integers(3, 6))], "short_deg": float(rng.uniform(15.0, 30.0))}
    link: dict = {"clock_drift_ppm": float(rng.uniform(-50, 50)), "clock_offset_us": int(rng.integers(0, 2**31)),
                  "jitter_ms": float(rng.uniform(0, 15))}
    if k % 3 == 0:
        link["drop_rate"] = float(rng.uniform(0.001, 0.02))
    if k % 7 == 3:
        link["disconnects"] = [[float(rng.uniform(0.2, 0.7) * duration_s), float(rng.uniform(0.5, 3.0))]]
    if k % 11 == 4:
        link["reboot_at_s"] = float(rng.uniform(0.3, 0.7) * duration_s)
    if mic_codec != "pcm16":
        link["mic_codec"] = mic_codec
    return {
        "seed": k, "duration_s": duration_s, "athlete": f"ath-{k % 12:03d}", "profile": PROFILES[k % 3],
        "joint": joint, "exercise": exercise,
        "mounting": {"misalignment_deg": float(rng.uniform(3.0, 15.0))},
        "sounds": sounds, "events": events, "link": link,
    }


def _check(k: int, table: dict) -> None:
    """Fail early, naming the session, if a generated scenario does not load (a bug in this script)."""
    from firmware_sim.scenario import scenario_from_dict

    scenario_from_dict(table, source=f"standard set session {k}")


def _rounded(x: object) -> object:
    """Scenario values with 2 decimals: the files are meant to be read and edited by people."""
    if isinstance(x, float):
        return round(x, 2)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def record_scenario(scenario_path: Path, out: Path) -> None:
    """Simulate the scenario and stream it through the gateway as fast as it goes, recording every packet."""
    from firmware_sim.scenario import load_scenario
    from firmware_sim.session import simulate_session
    from sensor_gateway.recorder import record_simulated_session

    record_simulated_session(simulate_session(load_scenario(scenario_path)), out,
                             meta={"scenario": scenario_path.name})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench/data/standard", help="output folder [%(default)s]")
    p.add_argument("--sessions", type=int, default=48, help="number of sessions (>= 40) [%(default)s]")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per session [%(default)s]")
    p.add_argument("--scenarios-only", action="store_true", help="write the scenario files, no recordings")
    p.add_argument("--mic-codec", choices=("pcm16", "adpcm"), default="pcm16",
                   help="microphone encoding on the air [%(default)s]")
    args = p.parse_args(argv)
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    for k in tqdm(range(args.sessions), desc="sessions", unit="session"):
        scenario_path = args.out / f"s{k:03d}.toml"
        table = _rounded(scenario_for(k, args.duration, args.mic_codec))
        _check(k, table)
        scenario_path.write_text(tomli_w.dumps(table))
        if not args.scenarios_only:
            record_scenario(scenario_path, args.out / f"s{k:03d}.jmrec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
