"""Consultation cases: the six Telehealth services, their status machine and timeline."""
