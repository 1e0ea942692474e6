"""Tamper-evident audit trail of every access to patient data."""
