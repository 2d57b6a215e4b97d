"""Simulation scenarios: a small TOML format a user can write, loaded into a validated :class:`Scenario`.

Format (every key optional; defaults in brackets; see ``scenarios/*.toml`` for examples)::

    description = "free text"
    seed = 7                    # int [0]: everything is deterministic in the seed
    duration_s = 60.0           # session length, s [20.0]
    athlete = "ath-003"         # pseudonym used in topics and labels ["ath-001"]
    profile = "tall"            # small | medium | tall | stiff ["medium"]
    joint = "left_knee"         # left_knee | right_knee | left_shoulder | right_shoulder ["left_knee"]
    exercise = "loaded_squat"   # see firmware_sim.exercises.EXERCISES ["bodyweight_squat"]

    [motion]                    # firmware_sim.exercises.MotionOptions
    tempo_scale = 1.0           # x every movement and pause duration (0.5 = fast but controlled)
    depth_deg = 100.0           # mean peak of the driving angle (knee flexion / hip flexion / elevation), deg
    max_reps = 8                # stop after this many reps
    sagittal_only = false       # knee moves in the sagittal plane only (the first version's squats)
    load_kg = 60.0              # loaded_squat barbell load [40]
    box_height_m = 0.40         # drop_landing box [0.35]
    cadence_steps_per_s = 2.8   # running [profile's]

    [mounting]
    misalignment_deg = 10.0     # each sensor rotated by exactly this angle about a random axis [0.0]

    [imu]                       # firmware_sim.imu_model.ImuErrorModel field names
    accel_noise_g = 0.003
    gyro_noise_dps = 0.1
    gyro_bias_min_dps = 0.2
    gyro_bias_max_dps = 0.5
    gyro_bias_drift_dps_per_sqrt_s = 0.01
    accel_bias_g = 0.02
    accel_scale_error = 0.01
    gyro_scale_error = 0.01
    accel_range_g = 16.0        # 2 | 4 | 8 | 16
    gyro_range_dps = 2000.0     # 250 | 500 | 1000 | 2000
    lowpass_hz = 75.0

    [sounds]                    # passed unchanged to firmware_sim.joint_sounds.synthesize_microphones
    clicks = 1                  # (validated by its parse_sounds when the file is loaded)
    snr_db = 10.0
    snaps = { angle_deg = [40.0, 60.0], probability = 0.8 }
    crepitus = { range_deg = [30.0, 90.0], level = 0.3 }

    [events]                    # firmware_sim.kinematic_events; reps are numbered from 1
    valgus = { reps = [3, 4, 5], magnitude_deg = 12.0, threshold_deg = 5.0 }
    instability = { times_s = [30.5], magnitude_deg = 30.0, duration_s = 0.2, rotation_deg = 10.0 }
    locking = { reps = [6], short_deg = 20.0, mode = "extension", hold_s = 1.5 }   # mode: extension | range

    [link]                      # passed unchanged to the peripheral's LinkFaults (session.link)
    drop_rate = 0.01

Errors are :class:`jointmon.errors.ConfigError` naming the file and the key (unknown keys, wrong types,
unknown exercise/profile/joint, events the exercise does not support).
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from firmware_sim.body_model import PROFILES
from firmware_sim.exercises import EXERCISES, MotionOptions
from firmware_sim.imu_model import ImuErrorModel
from firmware_sim.kinematic_events import EventSpec, InstabilitySpec, LockingSpec, ValgusSpec
from jointmon.errors import ConfigError
from jointmon.packets import ACCEL_RANGES_G, GYRO_RANGES_DPS

JOINTS = {"left_knee": "knee", "right_knee": "knee", "left_shoulder": "shoulder", "right_shoulder": "shoulder"}
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
MAX_MISALIGNMENT_DEG = 45.0


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; ``sounds`` and ``link`` are the raw tables, passed through to their owners."""

    seed: int = 0
    duration_s: float = 20.0
    athlete: str = "ath-001"
    profile: str = "medium"
    joint: str = "left_knee"
    exercise: str = "bodyweight_squat"
    motion: MotionOptions = field(default_factory=MotionOptions)
    misalignment_deg: float = 0.0
    imu: ImuErrorModel = field(default_factory=ImuErrorModel)
    sounds: dict[str, Any] = field(default_factory=dict)
    events: EventSpec = field(default_factory=EventSpec)
    link: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "<scenario>"  # the file it came from

    @property
    def joint_kind(self) -> str:
        """"knee" or "shoulder"."""
        return JOINTS[self.joint]

    @property
    def name(self) -> str:
        """The file's stem (or the source string)."""
        return Path(self.source).stem if self.source.endswith(".toml") else self.source


class _Reader:
    """Type-checked access to one TOML table; every error names the file and the dotted key."""

    def __init__(self, source: str, table: dict[str, Any], prefix: str = "") -> None:
        self.source, self.table, self.prefix = source, table, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {msg}")

    def check_keys(self, allowed: set[str]) -> None:
        for k in self.table:
            if k not in allowed:
                where = f"[{self.prefix[:-1]}]" if self.prefix else "the top level"
                raise ConfigError(f"{self.source}: {self.key(k)}: unknown key in {where} "
                                  f"(known: {', '.join(sorted(allowed))})")

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        if name not in self.table:
            return default
        v = self.table[name]
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            raise self.fail(name, f"expected {what}, got {type(v).__name__} {v!r}")
        return v

    def get_int(self, name: str, default: Any = None, *, minimum: int | None = None) -> Any:
        v = self._get(name, default, (int,), "an integer")
        if v is not None and minimum is not None and v < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {v}")
        return v

    def get_float(self, name: str, default: Any = None, *, minimum: float | None = None, positive: bool = False,
              maximum: float | None = None) -> Any:
        v = self._get(name, default, (int, float), "a number")
        if v is None:
            return None
        v = float(v)
        if positive and v <= 0:
            raise self.fail(name, f"must be > 0, got {v}")
        if minimum is not None and v < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise self.fail(name, f"must be <= {maximum}, got {v}")
        return v

    def get_str(self, name: str, default: Any = None, *, choices: list[str] | None = None) -> Any:
        v = self._get(name, default, (str,), "a string")
        if v is not None and choices is not None and v not in choices:
            raise self.fail(name, f"unknown value {v!r} (known: {', '.join(choices)})")
        return v

    def get_bool(self, name: str, default: Any = None) -> Any:
        return self._get(name, default, (bool,), "true or false")

    def get_table(self, name: str) -> dict[str, Any]:
        return self._get(name, {}, (dict,), "a table")

    def sub(self, name: str) -> _Reader:
        return _Reader(self.source, self.get_table(name), f"{self.key(name)}.")

    def list_of(self, name: str, kind: type, what: str, default: Any = None) -> Any:
        v = self._get(name, default, (list,), f"a list of {what}")
        if v is None:
            return None
        for x in v:
            if isinstance(x, bool) or not isinstance(x, kind if kind is not float else (int, float)):
                raise self.fail(name, f"expected a list of {what}, found {type(x).__name__} {x!r}")
        return tuple(float(x) if kind is float else x for x in v)


def _motion(r: _Reader) -> MotionOptions:
    r.check_keys({f.name for f in fields(MotionOptions)})
    max_reps = r.get_int("max_reps", minimum=0)
    return MotionOptions(
        tempo_scale=r.get_float("tempo_scale", 1.0, minimum=0.2, maximum=5.0),
        depth_deg=r.get_float("depth_deg", minimum=5.0, maximum=180.0),
        max_reps=max_reps,
        sagittal_only=r.get_bool("sagittal_only", False),
        load_kg=r.get_float("load_kg", minimum=0.0, maximum=400.0),
        box_height_m=r.get_float("box_height_m", minimum=0.05, maximum=1.5),
        cadence_steps_per_s=r.get_float("cadence_steps_per_s", minimum=1.5, maximum=4.0),
    )


def _imu(r: _Reader) -> ImuErrorModel:
    names = [f.name for f in fields(ImuErrorModel)]
    r.check_keys(set(names))
    d = ImuErrorModel()
    kw = {n: r.get_float(n, getattr(d, n), minimum=0.0) for n in names}
    if kw["accel_range_g"] not in ACCEL_RANGES_G:
        raise r.fail("accel_range_g", f"must be one of {list(ACCEL_RANGES_G)}, got {kw['accel_range_g']}")
    if kw["gyro_range_dps"] not in GYRO_RANGES_DPS:
        raise r.fail("gyro_range_dps", f"must be one of {list(GYRO_RANGES_DPS)}, got {kw['gyro_range_dps']}")
    if kw["gyro_bias_min_dps"] > kw["gyro_bias_max_dps"]:
        raise r.fail("gyro_bias_min_dps", "must be <= gyro_bias_max_dps")
    if not 5.0 <= kw["lowpass_hz"] <= 90.0:
        raise r.fail("lowpass_hz", f"must be in 5..90 Hz (the output rate is 200 Hz), got {kw['lowpass_hz']}")
    return ImuErrorModel(**kw)


def _events(r: _Reader, exercise: str, duration_s: float) -> EventSpec:
    r.check_keys({"valgus", "instability", "locking"})
    info = EXERCISES[exercise]
    for k in r.table:
        if k not in info.events:
            raise r.fail(k, f"not supported by exercise {exercise!r} (supported: "
                            f"{', '.join(sorted(info.events)) or 'none'})")
    valgus = instability = locking = None
    if "valgus" in r.table:
        v = r.sub("valgus")
        v.check_keys({"reps", "magnitude_deg", "threshold_deg"})
        reps = v.list_of("reps", int, "rep numbers (from 1)", ())
        if any(x < 1 for x in reps):
            raise v.fail("reps", "rep numbers start at 1")
        thr = v.get_float("threshold_deg", 5.0, positive=True, maximum=30.0)
        mag = v.get_float("magnitude_deg", 12.0, maximum=45.0)
        if mag <= thr:
            raise v.fail("magnitude_deg", f"must exceed threshold_deg ({thr}), got {mag}")
        valgus = ValgusSpec(reps, mag, thr)
    if "instability" in r.table:
        v = r.sub("instability")
        v.check_keys({"times_s", "magnitude_deg", "duration_s", "rotation_deg"})
        times = v.list_of("times_s", float, "times in seconds", ())
        bad = [t for t in times if not 0.0 <= t < duration_s]
        if bad:
            raise v.fail("times_s", f"{bad} outside the session (0 .. {duration_s} s)")
        instability = InstabilitySpec(
            times, v.get_float("magnitude_deg", 30.0, positive=True, maximum=80.0),
            v.get_float("duration_s", 0.2, minimum=0.05, maximum=0.6), v.get_float("rotation_deg", 10.0, minimum=0.0,
                                                                           maximum=45.0))
    if "locking" in r.table:
        v = r.sub("locking")
        v.check_keys({"reps", "short_deg", "mode", "hold_s"})
        reps = v.list_of("reps", int, "rep numbers (from 1)", ())
        if any(x < 1 for x in reps):
            raise v.fail("reps", "rep numbers start at 1")
        modes = sorted(info.locking_modes)
        mode = v.get_str("mode", modes[0] if len(modes) == 1 else "extension", choices=modes)
        locking = LockingSpec(reps, v.get_float("short_deg", 20.0, positive=True, maximum=90.0), mode,
                              v.get_float("hold_s", 1.5, minimum=0.1, maximum=10.0))
    return EventSpec(valgus, instability, locking)


def _check_sounds(sounds: dict[str, Any], source: str) -> None:
    """Validate ``[sounds]`` with the microphone model's own parser, when it is installed, so that a typo is
    reported when the file is loaded, with the file's name."""
    if importlib.util.find_spec("firmware_sim.joint_sounds") is None:
        return
    from firmware_sim.joint_sounds import parse_sounds

    try:
        parse_sounds(sounds)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def scenario_from_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a parsed TOML document (``source`` names it in errors) into a :class:`Scenario`."""
    r = _Reader(source, data)
    r.check_keys({"description", "seed", "duration_s", "athlete", "profile", "joint", "exercise", "motion",
                  "mounting", "imu", "sounds", "events", "link"})
    exercise = r.get_str("exercise", "bodyweight_squat", choices=sorted(EXERCISES))
    joint = r.get_str("joint", "left_knee", choices=list(JOINTS))
    if EXERCISES[exercise].joint_kind != JOINTS[joint]:
        raise r.fail("joint", f"{joint!r} cannot be used with exercise {exercise!r} "
                              f"(it instruments a {EXERCISES[exercise].joint_kind})")
    duration = r.get_float("duration_s", 20.0, positive=True, maximum=3600.0)
    mounting = r.sub("mounting")
    mounting.check_keys({"misalignment_deg"})
    sounds, link = r.get_table("sounds"), r.get_table("link")
    _check_sounds(sounds, source)
    return Scenario(
        seed=r.get_int("seed", 0, minimum=0),
        duration_s=duration,
        athlete=r.get_str("athlete", "ath-001"),
        profile=r.get_str("profile", "medium", choices=sorted(PROFILES)),
        joint=joint,
        exercise=exercise,
        motion=_motion(r.sub("motion")),
        misalignment_deg=mounting.get_float("misalignment_deg", 0.0, minimum=0.0, maximum=MAX_MISALIGNMENT_DEG),
        imu=_imu(r.sub("imu")),
        sounds=dict(sounds),
        events=_events(r.sub("events"), exercise, duration),
        link=dict(link),
        description=r.get_str("description", ""),
        source=source,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; :class:`ConfigError` names the file and the offending key."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read scenario: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return scenario_from_dict(data, str(p))


def example_scenarios() -> list[Path]:
    """The example scenario files shipped in ``scenarios/`` (sorted)."""
    return sorted(SCENARIO_DIR.glob("*.toml"))
