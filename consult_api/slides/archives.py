"""Unpack multi-file slides (MIRAX folder, DICOM-WSI instance set) from a zip, refusing anything unsafe.

Why so strict: the archive comes from another facility over the network. Names are checked before a
byte is written (no absolute paths, no ``..``, no links, no nested archives), declared sizes and
compression ratios are bounded (zip bombs), and the bytes actually inflated are counted against the
declared size, because a zip's headers can lie.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from consult_api.slides.errors import UnsafeArchive
from consult_api.storage import zipsafe

LIMITS = zipsafe.ZipLimits(max_entries=20_000, max_total_bytes=64 * 1024**3, max_ratio=200)


@dataclass(frozen=True)
class Unpacked:
    root: Path
    files: tuple[PurePosixPath, ...]


def is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def unpack(zip_path: Path, dest: Path) -> Unpacked:
    """Unpack into ``dest`` (created); on any refusal ``dest`` is removed and nothing remains."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            zipsafe.checked_entries(archive, LIMITS)  # refuse before creating anything
            dest.mkdir(parents=True)
            files = zipsafe.extract(archive, dest, LIMITS)
    except (zipfile.BadZipFile, zipsafe.UnsafeZip) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchive(str(exc)) from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Unpacked(dest, tuple(files))
