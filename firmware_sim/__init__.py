"""Firmware simulator: synthetic knee/shoulder sensor sessions with ground truth, and a simulated BLE peripheral.

Entry points: :func:`simulate_squat_session` (signals + labels) and :class:`SimulatedPeripheral`
(streams one sensor's signals as protocol-v1 notification packets).
"""

from firmware_sim.peripheral import SimulatedPeripheral
from firmware_sim.session import Label, SensorSignals, SimulatedSession, simulate_squat_session

__all__ = ["Label", "SensorSignals", "SimulatedPeripheral", "SimulatedSession", "simulate_squat_session"]
