"""Routing table: which cards apply to which series or slide."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from inference.routing import SeriesMetadata, SlideMetadata, route
from models.card import ModelCard

CT = "1.2.840.10008.5.1.4.1.1.2"
CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.fixture
def cards(make_card: Callable[..., ModelCard], make_slide_card: Callable[..., ModelCard]) -> list[ModelCard]:
    return [
        make_card(name="chest-ct", serves={"modalities": ["CT"], "body_parts": ["CHEST"]}),
        make_card(name="any-ct", serves={"modalities": ["CT"]}),
        make_card(name="cxr", serves={"modalities": ["CR", "DX"], "sop_class_uids": [CR]}),
        make_card(
            name="head-ct-seg", task="segmentation", serves={"modalities": ["CT"], "body_parts": ["HEAD"]}
        ),
        make_slide_card(name="he-tiles", serves={"stains": ["H&E"]}),
        make_slide_card(name="ihc-ki67", serves={"stains": ["Ki-67"]}),
        make_slide_card(name="any-stain", serves={}),
    ]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (SeriesMetadata("CT", "CHEST", CT), ["any-ct", "chest-ct"]),
        (SeriesMetadata("ct", "chest", CT), ["any-ct", "chest-ct"]),
        (SeriesMetadata("CT", "HEAD", CT), ["any-ct", "head-ct-seg"]),
        (SeriesMetadata("CT", None, CT), ["any-ct"]),
        (SeriesMetadata("CR", "CHEST", CR), ["cxr"]),
        (SeriesMetadata("DX", "CHEST", "1.2.3"), []),
        (SeriesMetadata("MR", "HEAD"), []),
        (SlideMetadata("H&E"), ["any-stain", "he-tiles"]),
        (SlideMetadata("HE"), ["any-stain", "he-tiles"]),
        (SlideMetadata("H and E"), ["any-stain", "he-tiles"]),
        (SlideMetadata("ki-67"), ["any-stain", "ihc-ki67"]),
        (SlideMetadata(None), ["any-stain"]),
    ],
)
def test_routing_table(
    metadata: SeriesMetadata | SlideMetadata, expected: list[str], cards: list[ModelCard]
) -> None:
    assert [c.name for c in route(metadata, cards)] == expected


def test_series_metadata_from_a_real_dataset(cards: list[ModelCard]) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    metadata = SeriesMetadata.from_dataset(ds)
    assert metadata.modality == "CT"
    assert metadata.sop_class_uid == CT
    assert "any-ct" in [c.name for c in route(metadata, cards)]
