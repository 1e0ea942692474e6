"""Imports every table so the metadata is complete (Alembic, tests, ``create_all``)."""

from consult_api.alerts.models import CaseAlert
from consult_api.audit.models import AuditEvent
from consult_api.auth.models import LoginAttempt
from consult_api.cases.models import Case, CaseAssignment, CaseEvent, Patient
from consult_api.db import Base
from consult_api.dicom.models import DicomNode, Instance, Series, Study
from consult_api.facilities.models import Facility, facility_referrals
from consult_api.findings.models import Finding
from consult_api.opinions.models import Addendum, Opinion
from consult_api.sessions.models import ReviewSession, SessionParticipant
from consult_api.slides.models import Slide
from consult_api.triage.models import TriageRun
from consult_api.users.models import ApiKey, User

__all__ = [
    "Addendum",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Case",
    "CaseAlert",
    "CaseAssignment",
    "CaseEvent",
    "DicomNode",
    "Facility",
    "Finding",
    "Instance",
    "LoginAttempt",
    "Opinion",
    "Patient",
    "ReviewSession",
    "Series",
    "SessionParticipant",
    "Slide",
    "Study",
    "TriageRun",
    "User",
    "facility_referrals",
]
