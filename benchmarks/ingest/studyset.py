"""The benchmark's study set: N CT slices, 512x512 int16, uncompressed (Explicit VR LE).

Uses the project's synthetic CT generator (``datasets.synthetic.ct``) so the files look like
what ingest will see (real CT attributes, noise that does not compress to nothing). Cached
on disk by (count, matrix, seed): generating 1,000 slices takes ~6 s, re-reading them is free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StudySet:
    """The files in instance order and the study they belong to."""

    directory: Path
    files: tuple[Path, ...]
    study_uid: str

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def ensure_study_set(root: Path, *, count: int, matrix: int = 512, seed: int = 20261) -> StudySet:
    """Generate (or reuse) the study set under ``root``."""
    from datasets.synthetic.ct import make_ct_phantom, write_ct_series  # heavy import, only here

    directory = root / f"ct-{count}x{matrix}-seed{seed}"
    marker = directory / "studyset.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        files = tuple(directory / name for name in meta["files"])
        if all(f.exists() for f in files):
            return StudySet(directory, files, meta["study_uid"])
    directory.mkdir(parents=True, exist_ok=True)
    phantom = make_ct_phantom(np.random.default_rng(seed), shape=(count, matrix, matrix), n_lesions=2)
    info = write_ct_series(
        phantom.iter_slices(),
        directory,
        spacing_mm=phantom.spacing_mm,
        patient_name="BENCH^INGEST",
        patient_id="BENCH0001",
        uid_seed=f"ingest-bench-{seed}",
        series_description="Ingest benchmark CT",
    )
    marker.write_text(json.dumps({"study_uid": info.study_uid, "files": [p.name for p in info.paths]}))
    return StudySet(directory, tuple(info.paths), info.study_uid)


def warm_page_cache(study: StudySet) -> None:
    """Read every file once so the first measured case does not pay for disk reads."""
    for f in study.files:
        f.read_bytes()
