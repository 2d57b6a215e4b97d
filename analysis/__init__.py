"""analysis: subscribes to sensor frames and detects clicks, angles, reps (and, later, valgus and instability)."""
