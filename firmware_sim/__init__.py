"""Firmware simulator: synthetic knee/shoulder sensor sessions with ground truth, and a simulated BLE peripheral.

Entry points: :func:`simulate_session` (a :class:`Scenario`, e.g. from :func:`load_scenario` on a TOML file in
``scenarios/``), :func:`simulate_squat_session` (the first version's bodyweight squats with clicks) and
:class:`SimulatedPeripheral` (streams one sensor's signals as protocol-v1 notification packets). The body
model and its joint-angle conventions are in :mod:`firmware_sim.body_model`.
"""

from firmware_sim.body_model import (
    PROFILES,
    AthleteProfile,
    Impact,
    knee_angles_from_orientations,
    shoulder_angles_from_orientations,
)
from firmware_sim.exercises import EXERCISES
from firmware_sim.peripheral import SimulatedPeripheral
from firmware_sim.scenario import Scenario, load_scenario
from firmware_sim.session import Label, SensorSignals, SimulatedSession, simulate_session, simulate_squat_session

__all__ = [
    "EXERCISES",
    "PROFILES",
    "AthleteProfile",
    "Impact",
    "Label",
    "Scenario",
    "SensorSignals",
    "SimulatedPeripheral",
    "SimulatedSession",
    "knee_angles_from_orientations",
    "load_scenario",
    "shoulder_angles_from_orientations",
    "simulate_session",
    "simulate_squat_session",
]
