"""Loaders: DICOM folder + labels CSV, annotated slide -> tiles, MedMNIST-style .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.errors import EmptyDatasetError, LabelsFileError, MissingSeriesError, NpzFormatError
from datasets.loaders.dicom_folder import load_dicom_folder
from datasets.loaders.npz import NpzSplit, load_medmnist_npz, write_medmnist_npz
from datasets.loaders.slide_tiles import collect_labelled_tiles, iter_labelled_tiles, read_geojson_annotations
from datasets.synthetic.ct import generate_ct_case, write_ct_series
from datasets.synthetic.he_tiles import separate_he
from datasets.synthetic.slides import SyntheticSlide
from tests.datasets.conftest import WrittenCT


@pytest.fixture
def dicom_root(tmp_path: Path, written_ct: WrittenCT) -> tuple[Path, str, str]:
    """Two series in nested folders: the session CT (lesion) and a lesion-free one."""
    import shutil

    shutil.copytree(written_ct.folder, tmp_path / "site_a" / "ct1")
    clean = generate_ct_case(np.random.default_rng(8), shape=(6, 32, 32), n_lesions=0)
    info = write_ct_series(clean.volume_hu, tmp_path / "site_b" / "x", spacing_mm=clean.spacing_mm)
    return tmp_path, written_ct.series.series_uid, info.series_uid


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_dicom_folder_items_load_volumes(
    tmp_path: Path, dicom_root: tuple[Path, str, str], written_ct: WrittenCT
) -> None:
    root, uid_a, uid_b = dicom_root
    csv_path = _csv(tmp_path / "labels.csv", f"series_uid,label,site\n{uid_a},lesion,a\n{uid_b},normal,b\n")
    items = load_dicom_folder(root, csv_path)
    assert [i.label for i in items] == ["lesion", "normal"]
    assert items[0].columns["site"] == "a"
    volume, spacing = items[0].load_volume()
    assert np.array_equal(volume, written_ct.case.volume_hu.astype(np.float32))
    assert spacing == pytest.approx(written_ct.case.spacing_mm, rel=1e-4)


def test_dicom_folder_by_path_column(tmp_path: Path, dicom_root: tuple[Path, str, str]) -> None:
    root, _, uid_b = dicom_root
    items = load_dicom_folder(root, _csv(tmp_path / "l.csv", "path,label\nsite_b,normal\n"))
    assert items[0].series_uid == uid_b


def test_labels_naming_missing_series_fail(tmp_path: Path, dicom_root: tuple[Path, str, str]) -> None:
    root, uid_a, _ = dicom_root
    csv_path = _csv(tmp_path / "l.csv", f"series_uid,label\n{uid_a},lesion\n1.2.3.4,normal\n")
    with pytest.raises(MissingSeriesError) as err:
        load_dicom_folder(root, csv_path)
    assert err.value.missing == ["1.2.3.4"]


def test_empty_and_malformed_labels_fail(tmp_path: Path, dicom_root: tuple[Path, str, str]) -> None:
    root = dicom_root[0]
    with pytest.raises(EmptyDatasetError):
        load_dicom_folder(root, _csv(tmp_path / "e.csv", "series_uid,label\n"))
    with pytest.raises(LabelsFileError, match="label"):
        load_dicom_folder(root, _csv(tmp_path / "n.csv", "series_uid,diagnosis\n1.2,x\n"))
    with pytest.raises(LabelsFileError, match="not found"):
        load_dicom_folder(root, tmp_path / "absent.csv")


def test_slide_tiles_are_labelled_from_annotations(small_slide: SyntheticSlide) -> None:
    tiles = list(
        iter_labelled_tiles(small_slide.slide.path, small_slide.annotations_path, mpp=1.0, tile_size=32)
    )
    labels = {t.label for t in tiles}
    assert labels == {"tumour", "normal"}
    assert all(t.image.shape == (32, 32, 3) and t.mpp == 1.0 for t in tiles)
    h = {
        lab: np.mean([separate_he(t.image)[..., 0].mean() for t in tiles if t.label == lab]) for lab in labels
    }
    assert h["tumour"] > 1.3 * h["normal"]
    classes = small_slide.spec.class_map(1)
    for t in tiles:
        footprint = classes[t.y : t.y + 128, t.x : t.x + 128]  # 32 px at 1.0 mpp = 128 px at 0.25
        tumour_fraction = float((footprint == 2).mean())
        assert tumour_fraction > 0.4 if t.label == "tumour" else tumour_fraction < 0.05


def test_collect_tiles_and_no_background(small_slide: SyntheticSlide) -> None:
    images, labels = collect_labelled_tiles(
        small_slide.slide.path, small_slide.annotations_path, mpp=1.0, tile_size=32, background_label=None
    )
    assert set(labels) == {"tumour"}
    assert images.dtype == np.uint8
    assert images.shape[1:] == (32, 32, 3)


def test_geojson_label_map(small_slide: SyntheticSlide) -> None:
    polygons = read_geojson_annotations(small_slide.annotations_path, {"Tumor": "malignant"})
    assert {p.label for p in polygons} == {"malignant"}


def test_npz_round_trip_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    splits = {
        s: NpzSplit(rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), rng.integers(0, 2, (n, 1)))
        for s, n in (("train", 10), ("val", 4), ("test", 4))
    }
    loaded = load_medmnist_npz(write_medmnist_npz(tmp_path / "m.npz", splits))
    assert loaded["train"].labels.shape == (10,)
    assert np.array_equal(loaded["val"].images, splits["val"].images)
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 8, 8)), train_labels=np.zeros(2, int))
    with pytest.raises(NpzFormatError, match="3 images but 2 labels"):
        load_medmnist_npz(tmp_path / "bad.npz", splits=["train"])
    with pytest.raises(NpzFormatError, match="missing keys"):
        load_medmnist_npz(tmp_path / "bad.npz", splits=["test"])
