"""Fixtures for datasets tests: small synthetic CT series and slides, written once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from datasets.synthetic.ct import CTCase, CTSeriesInfo, generate_ct_case, write_ct_series
from datasets.synthetic.slides import SyntheticSlide, generate_slide


@dataclass(frozen=True)
class WrittenCT:
    case: CTCase
    series: CTSeriesInfo
    folder: Path


@pytest.fixture(scope="session")
def ct_case() -> CTCase:
    """A small case with lesions (32 x 64 x 64), deterministic."""
    return generate_ct_case(np.random.default_rng(42), shape=(32, 64, 64), n_lesions=3)


@pytest.fixture(scope="session")
def written_ct(tmp_path_factory: pytest.TempPathFactory, ct_case: CTCase) -> WrittenCT:
    folder = tmp_path_factory.mktemp("ct") / "series"
    series = write_ct_series(
        ct_case.volume_hu,
        folder,
        spacing_mm=ct_case.spacing_mm,
        patient_name="DOE^JANE",
        patient_id="P-0042",
        uid_seed=42,
    )
    return WrittenCT(ct_case, series, folder)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """A 2048 x 1536 slide at 0.25 mpp with one tissue piece and two tumours."""
    out = tmp_path_factory.mktemp("slide")
    return generate_slide(np.random.default_rng(7), out, width=2048, height=1536, mpp=0.25, n_tumours=2)
