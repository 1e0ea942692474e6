"""Small slides written on the fly: a generic pyramidal TIFF and a DICOM-WSI set (one instance per
level, TILED_FULL, JPEG baseline frames), plus bad inputs. Pixels are a smooth pattern with texture
so that a tile served from the wrong place or level cannot match by accident."""

from __future__ import annotations

import zipfile
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
TILE = 256


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB image with structure at every scale (gradients, rings, noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    r = 128 + 100 * np.sin(x / 97.0) * np.cos(y / 53.0)
    g = 128 + 100 * np.sin(np.hypot(x - width / 3, y - height / 2) / 41.0)
    b = (x * 255.0 / width + y * 128.0 / height) % 255
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Levels 4x apart (block means), as scanners store them."""
    out = [image]
    for _ in range(levels - 1):
        prev = out[-1]
        h, w = -(-prev.shape[0] // 4) * 4, -(-prev.shape[1] // 4) * 4
        padded = np.pad(prev, ((0, h - prev.shape[0]), (0, w - prev.shape[1]), (0, 0)), mode="edge")
        out.append(padded.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3)).astype(np.uint8))
    return out


def write_generic_tiff(path: Path, width: int = 2048, height: int = 1536, levels: int = 2) -> Path:
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, level in enumerate(pyramid(pattern(width, height), levels)):
            tif.write(
                level,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                metadata=None,
            )
    return path


def write_flat_tiff(path: Path) -> Path:
    """A plain striped TIFF photo: a TIFF, but not a slide."""
    tifffile.imwrite(path, pattern(300, 200), photometric="rgb", metadata=None)
    return path


def _frames(level: np.ndarray) -> list[bytes]:
    rows, cols = -(-level.shape[0] // TILE), -(-level.shape[1] // TILE)
    frames = []
    for r in range(rows):
        for c in range(cols):
            tile = np.full((TILE, TILE, 3), 255, np.uint8)
            part = level[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            frames.append(bytes(imagecodecs.jpeg8_encode(tile, level=90)))
    return frames


def _instance(level: np.ndarray, index: int, uids: dict[str, str], mpp: float) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality, ds.PatientName, ds.PatientID = "SM", "SYNTHETIC^SLIDE", "SYN-1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = index + 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = level.shape[1], level.shape[0]
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.Rows = ds.Columns = TILE
    frames = _frames(level)
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImagedVolumeWidth = level.shape[1] * mpp * 4**index / 1000
    ds.ImagedVolumeHeight = level.shape[0] * mpp * 4**index / 1000
    measures = Dataset()
    measures.PixelSpacing = [mpp * 4**index / 1000] * 2
    measures.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return ds


def write_dicom_wsi(
    folder: Path, width: int = 1536, height: int = 1280, levels: int = 2, mpp: float = 0.25
) -> Path:
    """One Part-10 file per level in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": str(generate_uid()), "series": str(generate_uid()), "frame": str(generate_uid())}
    for index, level in enumerate(pyramid(pattern(width, height, seed=3), levels)):
        ds = _instance(level, index, uids, mpp)
        pydicom.dcmwrite(folder / f"level{index}.dcm", ds, enforce_file_format=True)
    return folder


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, prefix + str(path.relative_to(folder)))
    return archive
