"""datasets/ stays a pure library: no web framework, ORM, task queue, service, training or torch."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("fastapi", "sqlalchemy", "celery", "consult_api", "viewer", "training", "torch")


def test_datasets_imports_nothing_forbidden() -> None:
    modules = [
        "datasets.manifest",
        "datasets.synthetic.ct",
        "datasets.synthetic.radiograph",
        "datasets.synthetic.he_tiles",
        "datasets.synthetic.slides",
        "datasets.loaders.dicom_folder",
        "datasets.loaders.slide_tiles",
        "datasets.loaders.npz",
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
