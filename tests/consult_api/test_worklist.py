"""The worklist: most urgent first, and a count that stops past the page instead of scanning everything."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from consult_api.cases import repository
from tests.conftest import Actors, Network, move, new_case


def test_order_and_capped_total(
    client: TestClient, as_: Actors, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for urgent in (False, True, False, True, False):
        case = new_case(client, as_["ref_d1"], network.fid("C1"), urgent=urgent)
        move(client, as_["ref_d1"], case["id"], "submitted")
        ids.append(case["id"])
    page = client.get("/api/v1/cases", params={"limit": 5}, headers=as_["rad_c1"]).json()
    assert [c["priority"] for c in page["items"]] == ["urgent", "urgent", "routine", "routine", "routine"]
    assert (page["total"], page["total_exact"]) == (5, True)

    monkeypatch.setattr(repository, "COUNT_CAP", 2)
    capped = client.get("/api/v1/cases", params={"limit": 1}, headers=as_["rad_c1"]).json()
    assert (capped["total"], capped["total_exact"]) == (3, False)
    last = client.get("/api/v1/cases", params={"limit": 2, "offset": 3}, headers=as_["rad_c1"]).json()
    assert (last["total"], last["total_exact"]) == (5, True)
    assert len(last["items"]) == 2
