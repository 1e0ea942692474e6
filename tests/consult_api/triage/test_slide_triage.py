"""A slide uploaded by tus is found by the beat's slide sweep and triaged by the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.registry import ModelRegistry
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.slides.conftest import upload_slide
from tests.consult_api.triage.conftest import install, slide_card, tile_onnx, wait_for
from tests.inference.conftest import synthetic_slide_pixels, write_pyramid

pytestmark = [pytest.mark.integration]


def test_uploaded_slide_gets_a_finding_and_the_case_moves_up(
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    tmp_path: Path,
) -> None:
    install(registry, slide_card(), tile_onnx(tmp_path / "tiles.onnx"))
    procs = workers()
    procs.start()
    case = new_case(client, as_["ref_d1"], network.fid("C1"), kind="pathology")
    move(client, as_["ref_d1"], case["id"], "submitted")
    path = write_pyramid(tmp_path / "s.svs", synthetic_slide_pixels(2048, (512, 256, 1536, 1280)), mpp=0.5)
    slide = upload_slide(client, as_["ref_d1"], path, str(case["id"]))

    url = f"/api/v1/cases/{case['id']}/findings"
    found = wait_for(lambda: client.get(url, headers=as_["path_c1"]).json(), timeout=40)
    assert [(f["label"], f["slide_id"], f["priority"]) for f in found] == [("tumour", slide["id"], "urgent")]
    assert found[0]["location"]["bbox"]["width"] > 0
    assert found[0]["heatmap_sha256"]
    tops = found[0]["location"]["top_tiles"]  # the viewer's top-tiles gallery, best first
    assert tops and tops[0]["score"] >= tops[-1]["score"] and tops[0]["width"] > 0
    overlay = client.get(f"{url}/{found[0]['id']}/heatmap", headers=as_["path_c1"])
    assert (overlay.status_code, overlay.headers["content-type"]) == (200, "image/png")
    read = client.get(f"/api/v1/cases/{case['id']}", headers=as_["path_c1"]).json()
    assert (read["status"], read["priority"]) == ("triaged", "urgent")
