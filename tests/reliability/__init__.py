"""Reliability, security and load: fuzzing, faults, throttling, headers, logs without patient data."""
