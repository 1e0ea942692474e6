"""The APIs the viewer reads: a case's studies, a finding's heatmap PNG, and the model registry."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.findings.models import Finding
from models.registry import ModelRegistry
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.triage.conftest import classifier_onnx, ct_card

API = "/api/v1"


def _submitted(client: TestClient, as_: Actors, network: Network, kind: str = "imaging") -> str:
    case = new_case(client, as_["ref_d1"], network.fid("C1"), kind)
    move(client, as_["ref_d1"], case["id"], "submitted")
    return str(case["id"])


def _npz(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, heatmap=array.astype(np.float16))
    return buffer.getvalue()


def _finding(
    client: TestClient,
    factory: sessionmaker[Session],
    case_id: str,
    label: str,
    heatmap: np.ndarray[Any, Any] | None,
    location: dict[str, Any],
) -> str:
    sha = client.app.state.blob_store.put_stream([_npz(heatmap)]).sha256 if heatmap is not None else None  # type: ignore[attr-defined]
    with factory.begin() as session:
        row = Finding(
            case_id=case_id,
            model_name="m",
            model_version="1",
            input_checksum="b" * 64,
            label=label,
            score=0.9,
            priority="urgent",
            location=location,
            heatmap_sha256=sha,
        )
        session.add(row)
        session.flush()
        return row.id


def test_case_studies_list_the_uploaded_series_and_follow_case_visibility(
    client: TestClient, as_: Actors, network: Network, ct_files: list[Path]
) -> None:
    case_id = _submitted(client, as_, network)
    empty_case = _submitted(client, as_, network)
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in ct_files]
    uploaded = client.post(f"{API}/cases/{case_id}/dicom", files=files, headers=as_["ref_d1"])
    assert uploaded.status_code == 201, uploaded.text

    for who in ("ref_d1", "rad_c1", "admin"):
        response = client.get(f"{API}/cases/{case_id}/studies", headers=as_[who])
        assert response.status_code == 200, (who, response.text)
    studies = response.json()
    assert len(studies) == 1
    study = studies[0]
    assert study["study_instance_uid"] == uploaded.json()["instances"][0]["study_instance_uid"]
    assert study["modalities"] == ["CT"]
    assert [s["modality"] for s in study["series"]] == ["CT"]
    assert study["series"][0]["number_of_instances"] == len(ct_files) == study["number_of_instances"]
    assert study["series"][0]["series_instance_uid"]

    assert client.get(f"{API}/cases/{empty_case}/studies", headers=as_["rad_c1"]).json() == []
    for who in ("rad_c2", "ref_d2", "ml_c1"):  # cannot see the case: 404, not 403
        assert client.get(f"{API}/cases/{case_id}/studies", headers=as_[who]).status_code == 404
    assert client.get(f"{API}/cases/{uuid.uuid4()}/studies", headers=as_["admin"]).status_code == 404
    assert client.get(f"{API}/cases/{case_id}/studies").status_code == 401


def test_heatmap_png_over_the_slide_and_on_the_series_slice(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    case_id = _submitted(client, as_, network)
    grid = np.zeros((3, 4), dtype=np.float32)
    grid[1, 2] = 1.0  # one hot tile
    slide = _finding(
        client,
        session_factory,
        case_id,
        "tumour",
        grid,
        {"tile_size_level0": 100.0, "dimensions": [400, 300], "bbox": {"x": 200, "y": 100}},
    )
    volume = np.zeros((5, 16, 12), dtype=np.float32)
    volume[3, 4:8, 2:6] = 0.9
    series = _finding(client, session_factory, case_id, "dense", volume, {"slice_index": 3})
    scores = _finding(client, session_factory, case_id, "scores", np.linspace(0, 1, 5), {})
    bare = _finding(client, session_factory, case_id, "bare", None, {})
    base = f"{API}/cases/{case_id}/findings"

    response = client.get(f"{base}/{slide}/heatmap", params={"max_side": 200}, headers=as_["rad_c1"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"].startswith("private")
    image = Image.open(io.BytesIO(response.content))
    assert (image.mode, image.size) == ("RGBA", (200, 150))  # the slide's aspect ratio
    pixels = np.asarray(image)
    assert pixels[75, 125, 3] > 200  # inside the hot tile (level-0 x 200-300, y 100-200)
    assert pixels[10, 10, 3] == 0  # transparent where the score is low

    etag = response.headers["etag"]
    again = client.get(
        f"{base}/{slide}/heatmap",
        params={"max_side": 200},
        headers={**as_["rad_c1"], "If-None-Match": etag},
    )
    assert (again.status_code, again.content) == (304, b"")

    on_slice = client.get(f"{base}/{series}/heatmap", headers=as_["ref_d1"])
    assert on_slice.status_code == 200
    slice_image = np.asarray(Image.open(io.BytesIO(on_slice.content)))
    assert slice_image.shape == (16, 12, 4)  # the slice's own size
    assert slice_image[5, 3, 3] > 0 and slice_image[0, 0, 3] == 0
    empty = client.get(f"{base}/{series}/heatmap", params={"slice": 0}, headers=as_["ref_d1"])
    assert np.asarray(Image.open(io.BytesIO(empty.content)))[..., 3].max() == 0
    assert (
        client.get(f"{base}/{series}/heatmap", params={"slice": 9}, headers=as_["ref_d1"]).status_code == 422
    )
    assert client.get(f"{base}/{scores}/heatmap", headers=as_["ref_d1"]).status_code == 409

    assert client.get(f"{base}/{bare}/heatmap", headers=as_["rad_c1"]).status_code == 404  # no heatmap
    assert client.get(f"{base}/{uuid.uuid4()}/heatmap", headers=as_["rad_c1"]).status_code == 404
    for who in ("rad_c2", "ref_d2", "ml_c1"):  # the case is invisible to them
        assert client.get(f"{base}/{slide}/heatmap", headers=as_[who]).status_code == 404
    other = _submitted(client, as_, network)  # a finding addressed through another case: 404
    assert (
        client.get(f"{API}/cases/{other}/findings/{slide}/heatmap", headers=as_["rad_c1"]).status_code == 404
    )


def test_model_registry_for_ml_engineers_and_admins_only(
    client: TestClient, as_: Actors, network: Network, settings: Settings, tmp_path: Path
) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    onnx = classifier_onnx(tmp_path / "c.onnx")
    registry.register(ct_card(version="1.0.0", metrics={"auroc": 0.91}), onnx)
    registry.promote("ct-dense", "1.0.0")
    registry.register(ct_card(version="2.0.0"), onnx)
    registry.register(ct_card(version="0.9.0"), onnx)
    registry.retire("ct-dense", "0.9.0")

    for who in ("ml_c1", "admin"):
        response = client.get(f"{API}/models", headers=as_[who])
        assert response.status_code == 200, response.text
    cards = {m["version"]: m for m in response.json()}
    assert {v: m["state"] for v, m in cards.items()} == {
        "0.9.0": "retired",
        "1.0.0": "live",
        "2.0.0": "candidate",
    }
    live = cards["1.0.0"]
    assert (live["name"], live["task"], live["modality"], live["metrics"]) == (
        "ct-dense",
        "classification",
        "CT",
        {"auroc": 0.91},
    )
    assert live["onnx_sha256"] and live["labels"] == ["dense"]

    for who in ("rad_c1", "ref_d1", "fadm_c1"):
        assert client.get(f"{API}/models", headers=as_[who]).status_code == 403
    assert client.get(f"{API}/models").status_code == 401
