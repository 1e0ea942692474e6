"""The case status machine and who may drive each transition.

``draft -> submitted -> triaged -> in_review <-> needs_info -> concluded -> closed``; a submitted
case with nothing to triage (advice, a case conference) may be taken straight into review.
"""

from __future__ import annotations

from consult_api.access import Principal
from consult_api.cases.models import Case, CaseStatus

S = CaseStatus
TRANSITIONS: dict[CaseStatus, tuple[CaseStatus, ...]] = {
    S.draft: (S.submitted,),
    S.submitted: (S.triaged, S.in_review),
    S.triaged: (S.in_review,),
    S.in_review: (S.needs_info, S.concluded),
    S.needs_info: (S.in_review,),
    S.concluded: (S.closed,),
    S.closed: (),
}
COMMENT_REQUIRED = {(S.in_review, S.needs_info), (S.needs_info, S.in_review)}
EDITABLE_STATUSES = frozenset({S.draft, S.needs_info})


def allowed_from(status: CaseStatus) -> list[CaseStatus]:
    return list(TRANSITIONS[status])


def is_legal(current: CaseStatus, target: CaseStatus) -> bool:
    return target in TRANSITIONS[current]


def is_assigned(principal: Principal, case: Case) -> bool:
    return any(a.user_id == principal.id for a in case.assignments)


def refusal(
    principal: Principal | None, case: Case, target: CaseStatus, *, has_signed_opinion: bool
) -> str | None:
    """Why ``principal`` may not move ``case`` to ``target`` (None: they may). None principal = system."""
    if principal is None:
        return None
    if target is S.triaged:
        return "a case is marked triaged by the AI triage service, not by a user"
    if target is S.submitted:
        return (
            None
            if principal.is_referrer_for(case) or principal.is_admin
            else "only the referring facility may submit"
        )
    if target is S.in_review and case.status is S.needs_info:
        if principal.is_referrer_for(case) or is_assigned(principal, case):
            return None
        return "only the referring facility or an assigned specialist may resume the review"
    if target is S.in_review:
        return (
            None
            if principal.is_specialist_for(case)
            else "only a specialist of the target facility may take the case"
        )
    if target is S.needs_info:
        return None if is_assigned(principal, case) else "only an assigned specialist may ask for information"
    if target is S.concluded:
        if not is_assigned(principal, case):
            return "only an assigned specialist may conclude the case"
        return None if has_signed_opinion else "a case is concluded by signing an opinion"
    if target is S.closed:
        if principal.is_referrer_for(case) or is_assigned(principal, case) or principal.is_admin:
            return None
        return "only the referring facility or an assigned specialist may close the case"
    return "not permitted"
