"""Frames and rendered images from a stored Part-10 file (WADO-RS frames and rendered resources).

Frames of uncompressed instances are sliced from Pixel Data; compressed frames are passed through
as stored (no re-encoding). Rendering decodes with pydicom's handlers (pylibjpeg, openjpeg, RLE),
applies the Modality LUT, then the window the caller asked for or the one in the header.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID

from consult_api.errors import HoichanError, InvalidInput

ENCAPSULATED_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


class NoPixelData(HoichanError):
    status_code = 404
    title = "Not found"


class FrameOutOfRange(HoichanError):
    status_code = 404
    title = "Not found"


class CannotRender(HoichanError):
    status_code = 422
    title = "Cannot render"


@dataclass(frozen=True)
class Window:
    center: float
    width: float


@dataclass(frozen=True)
class FrameSet:
    media_type: str
    transfer_syntax_uid: str
    frames: list[bytes]


def read_dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def parse_frame_list(text: str) -> list[int]:
    try:
        frames = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InvalidInput(f"frame list {text!r} must be comma-separated frame numbers") from exc
    if not frames or any(f < 1 for f in frames):
        raise InvalidInput("frame numbers start at 1")
    return frames


def _check_frames(ds: Dataset, numbers: Sequence[int]) -> None:
    if "PixelData" not in ds:
        raise NoPixelData("the instance has no pixel data")
    count = _frame_count(ds)
    bad = [n for n in numbers if n > count]
    if bad:
        raise FrameOutOfRange(f"frames {bad} out of range: the instance has {count} frame(s)")


def extract_frames(ds: Dataset, numbers: Sequence[int]) -> FrameSet:
    """The requested frames, as stored: raw little-endian pixels or the compressed bitstream."""
    _check_frames(ds, numbers)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        all_frames = list(generate_frames(ds.PixelData, number_of_frames=_frame_count(ds)))
        media = ENCAPSULATED_MEDIA_TYPES.get(str(syntax), "application/octet-stream")
        return FrameSet(media, str(syntax), [all_frames[n - 1] for n in numbers])
    samples = int(ds.get("SamplesPerPixel", 1))
    frame_bytes = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8
    pixel_data: bytes = ds.PixelData
    frames = [pixel_data[(n - 1) * frame_bytes : n * frame_bytes] for n in numbers]
    return FrameSet("application/octet-stream", "1.2.840.10008.1.2.1", frames)


def parse_window(text: str | None) -> Window | None:
    """``window=center,width[,function]`` as PS3.18 8.3.5.1.3 defines it."""
    if not text:
        return None
    parts = text.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError) as exc:
        raise InvalidInput("window must be center,width[,function]") from exc
    if width <= 0:
        raise InvalidInput("window width must be positive")
    if len(parts) > 2 and parts[2].strip().lower() not in ("linear", ""):
        raise InvalidInput("only the LINEAR VOI LUT function is supported")
    return Window(center, width)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.split(",")[:2])
    except ValueError as exc:
        raise InvalidInput("viewport must be width,height") from exc
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise InvalidInput("viewport sides must be between 1 and 4096")
    return width, height


def _header_window(ds: Dataset) -> Window | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center_value, width_value = _first_value(center), _first_value(width)
    return Window(center_value, width_value) if width_value > 0 else None


def _first_value(value: object) -> float:
    """Window attributes may be multi-valued (several presets); the first is the default."""
    if isinstance(value, pydicom.multival.MultiValue):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def _frame_pixels(ds: Dataset, frame: int) -> NDArray[np.float64]:
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise CannotRender(f"pixel data cannot be decoded: {type(exc).__name__}") from exc
    if _frame_count(ds) > 1:
        pixels = pixels[frame - 1]
    return np.asarray(pixels)


def _to_8bit_grey(ds: Dataset, pixels: NDArray[np.float64], window: Window | None) -> NDArray[np.uint8]:
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    window = window or _header_window(ds)
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = window.center - window.width / 2, window.center + window.width / 2
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled.astype(np.uint8)


def render(
    ds: Dataset,
    *,
    frame: int = 1,
    window: Window | None = None,
    viewport: tuple[int, int] | None = None,
    media_type: str = "image/jpeg",
    quality: int = 90,
) -> bytes:
    """One frame as JPEG or PNG for display (never for diagnosis-grade pixel access)."""
    _check_frames(ds, [frame])
    pixels = _frame_pixels(ds, frame)
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        image = Image.fromarray(_to_8bit_grey(ds, pixels, window), mode="L")
    else:
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB")
    if viewport is not None:
        image.thumbnail(viewport)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=max(1, min(quality, 100)))
    return out.getvalue()
