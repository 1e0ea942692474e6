"""Role and facility boundaries as the viewer enforces them (its handlers) and as the API enforces
them for the same token: a referrer reaches no specialist page and no other facility's case."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.viewer.conftest import Seeded, bearer
from viewer.components import review
from viewer.components.common import Refused
from viewer.components.worklist import load_worklist
from viewer.engine import Engine

pytestmark = pytest.mark.integration


def test_referrer_is_refused_specialist_pages(live: Seeded) -> None:
    engine = Engine(live.base)
    referrer = engine.sign_in("ref_d1", PASSWORD, "en")
    with pytest.raises(Refused):
        review.open_case(engine, referrer, live.ct_case)
    assert "Not allowed" in load_worklist(engine, referrer, [], [], [], False)


def test_no_one_opens_another_facilitys_case(live: Seeded) -> None:
    engine = Engine(live.base)
    specialist = engine.sign_in("rad_c1", PASSWORD, "en")
    with pytest.raises(Exception, match="404"):
        review.open_case(engine, specialist, live.other_case)
    response = httpx.get(f"{live.base}/api/v1/cases/{live.other_case}", headers=bearer(live.base, "ref_d1"))
    assert response.status_code == 404


def test_opening_a_case_shows_its_series_in_instance_order(live: Seeded) -> None:
    engine = Engine(live.base)
    specialist = engine.sign_in("rad_c1", PASSWORD, "en")
    opened = review.open_case(engine, specialist, live.ct_case)
    view = opened[1]
    assert view.series[0].instances == live.sop_uids
