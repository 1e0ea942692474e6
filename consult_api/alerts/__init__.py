"""Alerts: critical findings and missed deadlines notified to on-duty specialists by webhook and e-mail."""
