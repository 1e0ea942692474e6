"""Who may see what: the access rules, written once and applied as SQL filters.

Every read of a case (and of anything hanging off a case) goes through ``visible_cases`` so the rule
cannot drift between routes. A record the caller may not see is reported as not found (404), so ids
cannot be probed; a visible record the caller may not change answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, false, or_, select, true

from consult_api.cases.models import Case, CaseAssignment, CaseKind, CaseStatus
from consult_api.dicom.models import Study


class Role(StrEnum):
    referrer = "referrer"
    radiologist = "radiologist"
    pathologist = "pathologist"
    surgeon = "surgeon"
    trainer = "trainer"
    facility_admin = "facility_admin"
    ml_engineer = "ml_engineer"
    admin = "admin"


GATEWAY_ROLE = Role.referrer
"""An upload gateway's API key acts with a referrer's rights for its own facility."""

_CONSULT_KINDS = frozenset({CaseKind.advice, CaseKind.clinical})
SPECIALTY_KINDS: dict[Role, frozenset[CaseKind]] = {
    Role.radiologist: frozenset({CaseKind.imaging}) | _CONSULT_KINDS,
    Role.pathologist: frozenset({CaseKind.pathology}) | _CONSULT_KINDS,
    Role.surgeon: frozenset({CaseKind.surgery}) | _CONSULT_KINDS,
    Role.trainer: frozenset({CaseKind.training}),
}
SPECIALIST_ROLES = frozenset(SPECIALTY_KINDS)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, or a facility's upload gateway by API key."""

    kind: str  # "user" | "api_key"
    id: str
    facility_id: str
    roles: frozenset[Role]
    name: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def is_admin(self) -> bool:
        return Role.admin in self.roles

    def has_any(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))

    def specialty_kinds(self) -> frozenset[CaseKind]:
        kinds: frozenset[CaseKind] = frozenset()
        for role in self.roles & SPECIALIST_ROLES:
            kinds |= SPECIALTY_KINDS[role]
        return kinds

    def is_specialist_for(self, case: Case) -> bool:
        """A specialist of the target facility whose specialty covers the case's kind."""
        return case.target_facility_id == self.facility_id and case.kind in self.specialty_kinds()

    def is_referrer_for(self, case: Case) -> bool:
        return Role.referrer in self.roles and case.referring_facility_id == self.facility_id

    def manages_facility(self, facility_id: str) -> bool:
        return self.is_admin or (Role.facility_admin in self.roles and self.facility_id == facility_id)


def case_visibility(principal: Principal) -> ColumnElement[bool]:
    """The SQL condition selecting exactly the cases ``principal`` may see."""
    if principal.is_admin:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if Role.referrer in principal.roles:
        clauses.append(Case.referring_facility_id == principal.facility_id)
    if Role.facility_admin in principal.roles:
        clauses.append(
            or_(
                Case.referring_facility_id == principal.facility_id,
                and_(Case.target_facility_id == principal.facility_id, Case.status != CaseStatus.draft),
            )
        )
    kinds = principal.specialty_kinds()
    if kinds:
        clauses.append(
            and_(
                Case.target_facility_id == principal.facility_id,
                Case.status != CaseStatus.draft,
                Case.kind.in_(sorted(kinds)),
            )
        )
    if principal.is_user:
        assigned = select(CaseAssignment.case_id).where(CaseAssignment.user_id == principal.id)
        clauses.append(and_(Case.id.in_(assigned), Case.status != CaseStatus.draft))
    return or_(*clauses) if clauses else false()


def study_visibility(principal: Principal) -> ColumnElement[bool]:
    """Studies a facility sent itself, plus studies attached to cases the caller may see."""
    if principal.is_admin:
        return true()
    clauses: list[ColumnElement[bool]] = [
        Study.case_id.in_(select(Case.id).where(case_visibility(principal)))
    ]
    if principal.has_any(Role.referrer, Role.facility_admin):
        clauses.append(Study.facility_id == principal.facility_id)
    return or_(*clauses)
