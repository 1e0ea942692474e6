"""``hoichan triage PATH...`` in local mode: a generated CT series (in a folder and in a zip) and a
generated slide, through the shipped demo models installed into a temporary registry."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from consult_api.triage.cli import UnsafeArchiveError, safe_extract
from datasets.synthetic.ct import generate_ct_case, write_ct_series
from datasets.synthetic.slides import generate_slide
from models.demo import install_demo_models
from models.registry import ModelRegistry

CT, TILES = "demo-ct-lesion-seg", "demo-he-tumour-tiles"


def _main(argv: list[str]) -> int:
    """Through the argparse wiring the ``hoichan`` entry point uses (``add_triage_commands``)."""
    import argparse

    from consult_api.triage.cli import add_triage_commands

    parser = argparse.ArgumentParser(prog="hoichan")
    add_triage_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def demo_registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    install_demo_models(ModelRegistry(root))
    return root


def test_local_batch_over_ct_folder_zip_and_slide(demo_registry: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    # The demo CT model's training distribution (its recipe.yaml), so the series has findings.
    case = generate_ct_case(
        rng,
        shape=(32, 64, 64),
        spacing_mm=(6.0, 4.5, 4.5),
        n_lesions=3,
        lesion_radius_mm=(10.0, 20.0),
        lung_lesion_hu=(-150.0, 60.0),
        liver_contrast_hu=(150.0, 300.0),
    )
    ct_dir = tmp_path / "in" / "ct"
    series = write_ct_series(case.volume_hu, ct_dir, spacing_mm=case.spacing_mm, uid_seed=3)
    # The same series under other UIDs, zipped: the zip path is expanded (safely) and triaged too.
    zipped = write_ct_series(case.volume_hu, tmp_path / "z", spacing_mm=case.spacing_mm, uid_seed=4)
    archive = tmp_path / "in" / "ct.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in zipped.paths:
            zf.write(path, f"study/{path.name}")
    slide = generate_slide(np.random.default_rng(7), tmp_path / "in" / "slides", width=2048, height=1536)
    out = tmp_path / "out"

    code = _main(
        [
            "triage",
            str(tmp_path / "in"),
            "--out",
            str(out),
            "--registry",
            str(demo_registry),
            "--stain",
            "H&E",
        ]
    )

    assert code == 0
    report = json.loads((out / "results.json").read_text())["results"]
    by_series = {r["series_instance_uid"]: r for r in report if r["kind"] == "series"}
    assert set(by_series) == {series.series_uid, zipped.series_uid}
    for result in by_series.values():
        assert result["status"] == "done" and result["model"].startswith(CT + "@")
        assert "lesion" in result["scores"]
        sr = pydicom.dcmread(out / result["sr_file"])
        assert sr.Modality == "SR"
        assert sr.StudyInstanceUID == result["study_instance_uid"]
    assert by_series[zipped.series_uid]["input"].startswith(f"{archive}!")
    (slide_result,) = [r for r in report if r["kind"] == "slide"]
    assert slide_result["status"] == "done" and slide_result["model"].startswith(TILES + "@")
    assert slide_result["input"] == str(slide.slide.path)
    assert slide_result["scores"]

    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {row["series_instance_uid"] for row in rows if row["kind"] == "series"} == set(by_series)
    assert any(row["kind"] == "slide" and row["model"].startswith(TILES) for row in rows)
    assert all(row["status"] == "done" and row["label"] for row in rows)


def test_no_applicable_model_is_reported_not_failed(demo_registry: Path, tmp_path: Path) -> None:
    slide = generate_slide(np.random.default_rng(1), tmp_path / "in", width=1024, height=768)
    out = tmp_path / "out"
    # Stain unknown: the H&E model does not apply (same rule as the service's routing).
    assert _main(["triage", str(slide.slide.path), "--out", str(out), "--registry", str(demo_registry)]) == 0
    (result,) = json.loads((out / "results.json").read_text())["results"]
    assert result["status"] == "skipped"


@pytest.mark.parametrize("name", ["../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm"])
def test_unsafe_zip_members_are_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.dcm").exists()


def test_zip_bomb_is_refused_on_bytes_written(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 2_000_000)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "dest", max_bytes=1_000_000)
