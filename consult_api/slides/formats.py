"""Identify and check a slide with OpenSlide, without touching the database.

OpenSlide decides what a slide is (Aperio SVS, Hamamatsu NDPI, MIRAX, Philips TIFF, Ventana, Leica,
generic tiled TIFF, DICOM-WSI...). Opening reads only headers, so a truncated file can open fine and
fail later on a pan; ``inspect`` therefore also reads the last tile of every level (the bytes
furthest into the file) and every associated image before a slide is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import openslide

from consult_api.slides.errors import SlideRejected

PHI_ASSOCIATED = ("label", "macro")
"""Associated images that show the slide label (patient name, barcode): patient data."""
PRIMARY_SUFFIXES = (".mrxs", ".vms", ".vmu", ".svs", ".ndpi", ".scn", ".bif", ".svslide", ".tif", ".tiff")
_PRIORITY_RANK = {suffix: rank for rank, suffix in enumerate(PRIMARY_SUFFIXES)}
MAX_CANDIDATES = 64
_DEFAULT_TILE = 256


@dataclass(frozen=True)
class LevelFacts:
    width: int
    height: int
    downsample: float
    tile_width: int
    tile_height: int


@dataclass(frozen=True)
class AssociatedFacts:
    name: str
    width: int
    height: int
    phi: bool


@dataclass(frozen=True)
class SlideFacts:
    vendor: str
    width: int
    height: int
    levels: tuple[LevelFacts, ...]
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    associated: tuple[AssociatedFacts, ...]

    def levels_json(self) -> list[dict[str, Any]]:
        return [asdict(level) for level in self.levels]

    def associated_json(self) -> list[dict[str, Any]]:
        return [asdict(image) for image in self.associated]


def is_phi(name: str) -> bool:
    return any(word in name.lower() for word in PHI_ASSOCIATED)


def _float(props: Any, key: str) -> float | None:
    try:
        return float(props[key])
    except (KeyError, ValueError):
        return None


def _tile_size(props: Any, level: int) -> tuple[int, int]:
    width = props.get(f"openslide.level[{level}].tile-width")
    height = props.get(f"openslide.level[{level}].tile-height")
    return (int(width) if width else _DEFAULT_TILE, int(height) if height else _DEFAULT_TILE)


def _levels(slide: openslide.OpenSlide) -> tuple[LevelFacts, ...]:
    return tuple(
        LevelFacts(w, h, float(ds), *_tile_size(slide.properties, i))
        for i, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples, strict=True))
    )


def _check_readable(slide: openslide.OpenSlide, levels: Sequence[LevelFacts]) -> None:
    """Read the bottom-right tile of each level and each associated image; raise on any error."""
    for index, level in enumerate(levels):
        tw, th = min(level.tile_width, level.width), min(level.tile_height, level.height)
        x = int((level.width - tw) * level.downsample)
        y = int((level.height - th) * level.downsample)
        try:
            slide.read_region((x, y), index, (tw, th))
        except openslide.OpenSlideError as exc:
            raise SlideRejected(f"level {index} cannot be read ({exc}); is the file truncated?") from exc
    try:
        for name in slide.associated_images:
            slide.associated_images[name].load()
    except openslide.OpenSlideError as exc:
        raise SlideRejected(f"an associated image cannot be read ({exc})") from exc


def _open(path: Path) -> openslide.OpenSlide:
    if openslide.OpenSlide.detect_format(str(path)) is None:
        raise SlideRejected("OpenSlide does not recognise the format")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as exc:
        raise SlideRejected(f"OpenSlide cannot open it: {exc}") from exc


def inspect(path: Path) -> SlideFacts:
    """Facts about the slide at ``path``; ``SlideRejected`` with the reason if it is not one."""
    slide = _open(path)
    try:
        levels = _levels(slide)
        _check_readable(slide, levels)
        props = slide.properties
        associated = tuple(
            AssociatedFacts(name, image.width, image.height, is_phi(name))
            for name, image in slide.associated_images.items()
        )
        return SlideFacts(
            vendor=str(props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"),
            width=levels[0].width,
            height=levels[0].height,
            levels=levels,
            mpp_x=_float(props, openslide.PROPERTY_NAME_MPP_X),
            mpp_y=_float(props, openslide.PROPERTY_NAME_MPP_Y),
            objective_power=_float(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
            associated=associated,
        )
    except openslide.OpenSlideError as exc:
        raise SlideRejected(f"OpenSlide failed reading it: {exc}") from exc
    finally:
        slide.close()


def _priority(name: PurePosixPath) -> tuple[int, str]:
    rank = _PRIORITY_RANK.get(name.suffix.lower(), len(PRIMARY_SUFFIXES))
    return (rank, str(name))


def find_entry(root: Path, files: Sequence[PurePosixPath]) -> PurePosixPath:
    """The file of an unpacked multi-file slide that OpenSlide should open (the ``.mrxs`` of a
    MIRAX folder, any instance of a DICOM-WSI set, or the one slide file)."""
    for name in sorted(files, key=_priority)[:MAX_CANDIDATES]:
        if openslide.OpenSlide.detect_format(str(root.joinpath(*name.parts))) is not None:
            return name
    raise SlideRejected("no file in the archive is a slide OpenSlide recognises")
