"""Hypothesis fuzzing of the ingest edges: DICOM parsing, zip archives, tus offsets, DeepZoom paths.

Each property feeds mutated real inputs and allows only the documented outcomes: success or the
module's own refusal, never another exception (which would be a 500 in the API).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from consult_api.dicom.archive import UnsafeArchive, ZipLimits, stage_members
from consult_api.dicom.parsing import DicomRejected, parse_instance
from consult_api.errors import HoichanError
from consult_api.storage.blobs import LocalBlobStore
from consult_api.storage.zipsafe import UnsafeZip, check_entry_name
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.slides.conftest import metadata, sha256_header, upload_slide
from tests.consult_api.slides.synthetic import write_generic_tiff
from tests.reliability.fuzzing import CI

SEEDS = [
    Path(get_testdata_file(name))  # type: ignore[arg-type]
    for name in (
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "image_dfl.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "rtplan.dcm",
    )
]
SEED_BYTES = [p.read_bytes() for p in SEEDS]


@st.composite
def mutated_dicom(draw: st.DrawFn) -> bytes:
    """A real file with a few byte flips, overwrites, insertions, deletions or a truncation."""
    data = bytearray(draw(st.sampled_from(SEED_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        if len(data) < 2:
            break
        kind = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "header"]))
        # Mutations cluster in the first 2 KB (meta and header elements) where the parser looks.
        limit = len(data) - 1 if kind == "truncate" else min(len(data) - 1, 2048)
        at = draw(st.integers(0, max(limit, 0)))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        else:  # a length field of an element header set to an extreme value
            data[at : at + 4] = draw(
                st.sampled_from([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x00\x00\x00\x00"])
            )
    return bytes(data)


@settings(CI)
@given(data=mutated_dicom())
def test_parse_instance_only_accepts_or_rejects(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("dcm", numbered=True) / "x.dcm"
    path.write_bytes(data)
    try:
        parsed = parse_instance(path)
    except DicomRejected as exc:
        reason = exc.reason
        assert isinstance(reason, int)
        return
    assert parsed.sop_instance_uid and parsed.study_instance_uid


# ------------------------------------------------------------------------------------ zip archives

LIMITS = ZipLimits(max_entries=50, max_total_bytes=4 << 20, max_ratio=200)


def _archive(compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as out:
        out.writestr("study/a.dcm", SEED_BYTES[0])
        out.writestr("study/b.dcm", SEED_BYTES[1])
        out.writestr("README.txt", b"hello " * 100)
    return buffer.getvalue()


ARCHIVES = [_archive(zipfile.ZIP_DEFLATED), _archive(zipfile.ZIP_STORED)]


@st.composite
def mutated_zip(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(ARCHIVES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] ^= draw(st.integers(1, 255))
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


@settings(CI)
@given(data=mutated_zip())
def test_zip_staging_only_succeeds_or_refuses_and_leaves_nothing(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = LocalBlobStore(tmp_path_factory.mktemp("blobs", numbered=True))
    try:
        staged = stage_members(io.BytesIO(data), store, LIMITS)
    except UnsafeArchive:
        assert list(store.tmp_dir.iterdir()) == [], "a refused archive left staged files"
        return
    for name, blob in staged:
        check_entry_name(name)
        assert blob.path.stat().st_size == blob.ref.size
        blob.discard()


@settings(CI)
@given(name=st.text(alphabet=st.sampled_from(list("ab./\\:.. C")), max_size=12) | st.text(max_size=20))
def test_zip_entry_names_never_escape(name: str) -> None:
    try:
        check_entry_name(name)
    except UnsafeZip:
        return
    parts = name.replace("\\", "/").split("/")
    assert not name.startswith(("/", "\\")) and ".." not in parts
    assert not (len(name) > 1 and name[1] == ":")


# --------------------------------------------------------------------------------- tus offsets

TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_SIZE = 3000
PAYLOAD = bytes(range(256)) * 12  # 3072 bytes, trimmed to the upload size


@pytest.fixture
def imaging_case(client: TestClient, as_: Actors, network: Network) -> str:
    case = new_case(client, as_["ref_d1"], network.fid("C1"), kind="pathology")
    move(client, as_["ref_d1"], case["id"], "submitted")
    return str(case["id"])


step = st.tuples(
    st.sampled_from(["right", "stale", "ahead", "negative", "garbage", "bad_checksum", "no_checksum"]),
    st.integers(1, 1200),
)


@settings(CI, max_examples=max(CI.max_examples // 5, 10))
@given(steps=st.lists(step, min_size=1, max_size=8))
def test_tus_offset_is_always_the_accepted_prefix(
    client: TestClient, as_: Actors, imaging_case: str, steps: list[tuple[str, int]]
) -> None:
    """Whatever mix of right, stale, future, malformed and corrupt PATCHes arrives, the committed
    offset is exactly the bytes accepted so far, and the stored bytes are that prefix."""
    headers = as_["ref_d1"]
    data = PAYLOAD[:UPLOAD_SIZE]
    created = client.post(
        "/uploads",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(UPLOAD_SIZE),
            "Upload-Metadata": metadata(filename="notes.bin", case_id=imaging_case),
        },
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    committed = 0
    for kind, size in steps:
        if committed == UPLOAD_SIZE:
            break
        chunk = data[committed : committed + size]
        offset: str = str(committed)
        checksum = sha256_header(chunk)
        if kind == "stale":
            offset = str(max(committed - size, 0) if committed else committed + 1)
        elif kind == "ahead":
            offset = str(committed + size)
        elif kind == "negative":
            offset = str(-size)
        elif kind == "garbage":
            offset = f"{committed}x"
        elif kind == "bad_checksum":
            checksum = sha256_header(chunk + b"!")
        patch_headers = {
            **headers,
            **TUS,
            "Upload-Offset": offset,
            "Content-Type": "application/offset+octet-stream",
        }
        if kind != "no_checksum":
            patch_headers["Upload-Checksum"] = checksum
        response = client.patch(url, content=chunk, headers=patch_headers)
        assert response.status_code < 500, response.text
        accepted = kind in ("right", "no_checksum") or (kind == "stale" and offset == str(committed))
        if accepted:
            # The last chunk completes the upload: it is then refused as a slide (not one), never a 5xx.
            if committed + len(chunk) == UPLOAD_SIZE:
                assert response.status_code in (204, 400, 415, 422), response.text
                return
            assert response.status_code == 204, response.text
            committed += len(chunk)
            assert int(response.headers["Upload-Offset"]) == committed
        else:
            assert response.status_code in (400, 409, 460), (kind, response.status_code, response.text)
        head = client.head(url, headers={**headers, **TUS})
        assert head.status_code == 200
        assert int(head.headers["Upload-Offset"]) == committed
    upload_id = url.rsplit("/", 1)[1]
    stored = client.app.state.settings.data_dir / "uploads"  # type: ignore[attr-defined]
    files = [p for p in stored.rglob(f"{upload_id}*") if p.is_file() and not p.name.endswith(".json")]
    if files:
        assert files[0].read_bytes() == data[:committed]


# ------------------------------------------------------------------------------ DeepZoom paths


@pytest.fixture
def slide(client: TestClient, as_: Actors, imaging_case: str, tmp_path: Path) -> str:
    path = write_generic_tiff(tmp_path / "small.tiff", width=700, height=500, levels=2)
    return str(upload_slide(client, as_["path_c1"], path, imaging_case)["id"])


huge = st.integers(0, 2**70)
small = st.integers(0, 12)


@settings(CI, max_examples=max(CI.max_examples // 3, 10))
@given(
    level=small | huge,
    col=small | huge,
    row=small | huge,
    raw=st.one_of(st.none(), st.text(max_size=24)),
)
def test_deepzoom_paths_answer_a_tile_or_a_clean_error(
    client: TestClient, as_: Actors, slide: str, level: int, col: int, row: int, raw: str | None
) -> None:
    if raw is None:
        path = f"/api/v1/slides/{slide}_files/{level}/{col}_{row}.jpeg"
    else:
        path = f"/api/v1/slides/{slide}_files/{raw}"
    try:
        response = client.get(path, headers=as_["path_c1"])
    except Exception:
        if raw is None:
            raise
        return
    assert response.status_code in (200, 400, 404, 422), (path, response.status_code, response.text)
    if response.status_code == 200:
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content[:2] == b"\xff\xd8"


def test_profile_is_seeded() -> None:
    assert CI.database is None
    assert all(seed[128:132] == b"DICM" for seed in SEED_BYTES)
    assert issubclass(UnsafeArchive, HoichanError)
