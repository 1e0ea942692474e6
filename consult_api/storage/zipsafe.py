"""Untrusted zip archives, checked the same way at every door (DICOM uploads, slide sets, batch triage).

Archives come from other facilities over the network. Names are checked before a byte is written
(no absolute paths, drive letters, ``..``, NUL, links or nested archives), declared sizes and
compression ratios are bounded (zip bombs), and the bytes actually inflated are counted against the
declared size, because a zip's headers can lie.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")
CHUNK = 1024 * 1024


class UnsafeZip(ValueError):
    """Why an archive was refused; each door turns it into its own HTTP problem."""


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 8 * 1024**3
    max_ratio: int = 200
    ratio_floor_bytes: int = 1024 * 1024
    """Entries smaller than this may compress as well as they like (a blank DICOM frame does)."""


def check_entry_name(name: str) -> PurePosixPath:
    """The entry's relative path; ``UnsafeZip`` for anything that could land outside the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise UnsafeZip(f"entry {name!r} points outside the archive")
    if ".." in path.parts:
        raise UnsafeZip(f"entry {name!r} points outside the archive")
    if name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
        raise UnsafeZip(f"entry {name!r} is an archive; nested archives are refused")
    return path


def _check_sizes(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    if len(infos) > limits.max_entries:
        raise UnsafeZip(f"the archive has {len(infos)} entries; at most {limits.max_entries} are accepted")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsafeZip(f"entry {info.filename!r} is encrypted")
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
            raise UnsafeZip(f"entry {info.filename!r} expands {ratio:.0f}x (zip bomb)")
    if total > limits.max_total_bytes:
        raise UnsafeZip(
            f"the archive expands to {total} bytes; at most {limits.max_total_bytes} are accepted"
        )


def checked_entries(
    archive: zipfile.ZipFile, limits: ZipLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every file entry with its checked path (folders dropped), before anything is extracted."""
    infos = archive.infolist()
    _check_sizes(infos, limits)
    entries = []
    for info in infos:
        path = check_entry_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeZip(f"entry {info.filename!r} is a symbolic link")
        if not info.is_dir():
            entries.append((info, path))
    return entries


def entry_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """An entry's bytes, stopping at a nested archive or at inflation past the declared size."""
    written = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                if written == 0 and chunk.startswith(ARCHIVE_MAGIC):
                    raise UnsafeZip(
                        f"entry {info.filename!r} is an archive; nested archives are not accepted"
                    )
                written += len(chunk)
                if written > info.file_size:
                    raise UnsafeZip(f"entry {info.filename!r} inflates past its declared size (zip bomb)")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise UnsafeZip(f"the archive is corrupt: {exc}") from exc


def extract(archive: zipfile.ZipFile, dest: Path, limits: ZipLimits) -> list[PurePosixPath]:
    """Write every checked entry under ``dest``; the caller removes ``dest`` if this raises."""
    entries = checked_entries(archive, limits)
    for info, path in entries:
        target = dest.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in entry_chunks(archive, info):
                out.write(chunk)
    return [path for _, path in entries]
