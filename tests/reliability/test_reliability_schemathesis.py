"""Property-based API fuzzing with schemathesis against the app's own OpenAPI schema.

Every operation gets schema-valid generated requests with a real token (an administrator and a
referrer): no 5xx, and every response must conform to the schema (status code, content type,
headers, body). Seeded and bounded: ``HOICHAN_FUZZ_EXAMPLES`` examples per operation (default 20)
and ``HOICHAN_FUZZ_SECONDS`` in all per role (default 45); raise both for a longer run.
"""

from __future__ import annotations

import os
import re
import time

import pydicom
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi

from consult_api.app import create_app
from consult_api.config import Settings
from tests.conftest import Actors, Network, new_case
from tests.consult_api.dicom.conftest import CT_SMALL, stow

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("HOICHAN_FUZZ_EXAMPLES", "20"))
BUDGET_SECONDS = float(os.environ.get("HOICHAN_FUZZ_SECONDS", "45"))
SEED = int(os.environ.get("HOICHAN_FUZZ_SEED", "20261128"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("role", ["admin", "ref_d1"])
def test_api_conforms_to_its_schema(settings: Settings, as_: Actors, network: Network, role: str) -> None:
    # Something to find: a case with a stored CT instance, so generated requests reach real records
    # (real ids are used for the path parameters of those names, generated ones for the rest).
    case = new_case(as_.client, as_["ref_d1"], network.fid("C1"))
    ct = pydicom.dcmread(CT_SMALL)
    stowed = stow(
        as_.client, as_["ref_d1"], [CT_SMALL.read_bytes()], url=f"/dicom-web/studies?case={case['id']}"
    )
    assert stowed.status_code == 200, stowed.text
    known = {
        "case_id": str(case["id"]),
        "study_uid": str(ct.StudyInstanceUID),
        "series_uid": str(ct.SeriesInstanceUID),
        "sop_uid": str(ct.SOPInstanceUID),
        "facility_id": network.fid("D1"),
    }
    app = create_app(
        settings.model_copy(update={"login_max_failures": 10_000, "login_max_failures_per_ip": 10_000})
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = as_[role]
    failures: dict[str, str] = {}
    started = time.monotonic()
    tested = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if time.monotonic() - started > BUDGET_SECONDS:
                break
            label = operation.label
            names = set(re.findall(r"{(\w+)}", operation.path))
            path_parameters = {k: v for k, v in known.items() if k in names} or None
            positive = operation.as_strategy(path_parameters=path_parameters)
            negative = operation.as_strategy(GenerationMode.NEGATIVE)

            @seed(SEED)
            @hypothesis_settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=positive | negative)
            def run(case: schemathesis.Case) -> None:
                valid = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
                case.call_and_validate(headers=headers, checks=CHECKS if valid else [not_a_server_error])

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect all, then report
                failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
            tested += 1
    finally:
        asgi.shutdown_lifespans()
    elapsed = time.monotonic() - started
    print(f"schemathesis ({role}): {tested} operations, up to {EXAMPLES} examples each, {elapsed:.1f} s")
    assert tested > 20
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
