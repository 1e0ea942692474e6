"""Data sources: DICOM folders, npz and manifests feed training; bad inputs fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.loaders.npz import NpzSplit, write_medmnist_npz
from datasets.synthetic.radiograph import generate_radiograph, write_radiograph_dicom
from inference.dicom_series import load_series
from inference.preprocessing import preprocess_volume, slices_to_batch
from models.card import InputSpec, Normalization
from training.data import ClassificationSet, DataRequest, load_data, split_indices
from training.errors import DataSourceError, EmptyDatasetError, MissingLabelledSeriesError
from training.preprocess import image_to_input
from training.recipe import DicomFolderSource, NpzSource, SyntheticRadiographs

SPEC = InputSpec(spatial_dims=2, patch_size=(32, 32), normalization=Normalization.ZSCORE)
REQUEST = DataRequest("classification-2d", SPEC, "opacity")


@pytest.fixture(scope="module")
def dx_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Six DX instances (alternating labels) and their SeriesInstanceUIDs."""
    folder = tmp_path_factory.mktemp("dx")
    rng = np.random.default_rng(0)
    uids = []
    for i in range(6):
        image = generate_radiograph(rng, size=64, has_opacity=bool(i % 2))
        path = write_radiograph_dicom(image, folder / f"case{i}" / "image.dcm", uid_seed=f"dx{i}")
        uids.append(str(load_series([path]).series_instance_uid))
    return folder, uids


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("series_uid,label\n" + "".join(f"{u},{label}\n" for u, label in rows))
    return path


def test_dicom_folder_feeds_classification(dx_folder: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, uids = dx_folder
    labels = _csv(
        tmp_path / "labels.csv", [(u, "positive" if i % 2 else "negative") for i, u in enumerate(uids)]
    )
    source = DicomFolderSource(source="dicom-folder", root=folder, labels_csv=labels, val_fraction=0.34)
    bundle = load_data(source, REQUEST)
    assert isinstance(bundle.train, ClassificationSet)
    assert (len(bundle.train), len(bundle.val)) == (4, 2)
    assert bundle.train.inputs.shape[1:] == (1, 32, 32)


def test_training_input_is_the_serving_input(dx_folder: tuple[Path, list[str]]) -> None:
    """No train/serve skew: the same DX file gives the same tensor through both paths."""
    folder, _ = dx_folder
    volume = load_series(sorted(folder.rglob("*.dcm"))[:1])
    served = slices_to_batch(preprocess_volume(volume.pixels, volume.spacing, SPEC)[0], SPEC)[0]
    trained = image_to_input(volume.pixels[0], volume.spacing[1:], SPEC)
    np.testing.assert_array_equal(served, trained)


def test_labels_csv_naming_missing_series(dx_folder: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, uids = dx_folder
    labels = _csv(tmp_path / "labels.csv", [(uids[0], "1"), ("1.2.3.999", "0")])
    source = DicomFolderSource(source="dicom-folder", root=folder, labels_csv=labels)
    with pytest.raises(MissingLabelledSeriesError) as info:
        load_data(source, REQUEST)
    assert info.value.missing == ["1.2.3.999"]


def test_empty_labels_csv(dx_folder: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, _ = dx_folder
    source = DicomFolderSource(source="dicom-folder", root=folder, labels_csv=_csv(tmp_path / "e.csv", []))
    with pytest.raises(EmptyDatasetError):
        load_data(source, REQUEST)


def test_empty_folder(tmp_path: Path) -> None:
    """A CSV naming series in an empty folder: every series is missing."""
    (tmp_path / "empty").mkdir()
    labels = _csv(tmp_path / "labels.csv", [("1.2.3", "1")])
    source = DicomFolderSource(source="dicom-folder", root=tmp_path / "empty", labels_csv=labels)
    with pytest.raises(MissingLabelledSeriesError):
        load_data(source, REQUEST)


def test_one_class_only_is_refused(dx_folder: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, uids = dx_folder
    labels = _csv(tmp_path / "labels.csv", [(u, "0") for u in uids])
    source = DicomFolderSource(source="dicom-folder", root=folder, labels_csv=labels)
    with pytest.raises(EmptyDatasetError, match="both positive and negative"):
        load_data(source, REQUEST)


def test_source_must_fit_the_kind() -> None:
    source = SyntheticRadiographs(source="synthetic-radiographs", n_train=2, n_val=2)
    with pytest.raises(DataSourceError, match="segmentation-3d"):
        load_data(source, DataRequest("segmentation-3d", SPEC, "lesion"))


def test_npz_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    splits = {
        name: NpzSplit(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), np.arange(n) % 3)
        for name, n in (("train", 12), ("val", 6), ("test", 3))
    }
    path = write_medmnist_npz(tmp_path / "mnist.npz", splits)
    bundle = load_data(NpzSource(source="npz", path=path, positive_classes=[2]), REQUEST)
    assert isinstance(bundle.val, ClassificationSet)
    assert bundle.val.inputs.shape == (6, 1, 32, 32)
    assert bundle.val.targets.tolist() == [0, 0, 1, 0, 0, 1]


def test_split_is_seeded_and_disjoint() -> None:
    train, val = split_indices(10, 0.3, seed=7, evaluation=False)
    assert sorted(train + val) == list(range(10))
    assert len(val) == 3
    assert split_indices(10, 0.3, seed=7, evaluation=False) == (train, val)
    assert split_indices(10, 0.3, seed=7, evaluation=True) == ([], list(range(10)))
