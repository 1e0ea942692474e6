"""Longer fuzzing on demand: ``python -m tests.reliability.fuzz --examples 20000``.

Runs the hypothesis properties (DICOM parsing, zip archives, tus offsets, DeepZoom paths) and the
schemathesis API run with more examples, unseeded (``--random``) or seeded as in CI.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=5000, help="examples per property")
    parser.add_argument("--api-examples", type=int, default=100, help="schemathesis examples per operation")
    parser.add_argument("--api-seconds", type=float, default=1800, help="schemathesis time cap per role")
    parser.add_argument("--random", action="store_true", help="new inputs each run (no fixed seed)")
    parser.add_argument("-k", default="", help="pytest -k expression to pick properties")
    args = parser.parse_args()
    os.environ["HOICHAN_FUZZ_EXAMPLES_PROPERTY"] = str(args.examples)
    os.environ["HOICHAN_FUZZ_EXAMPLES"] = str(args.api_examples)
    os.environ["HOICHAN_FUZZ_SECONDS"] = str(args.api_seconds)
    if args.random:
        os.environ["HOICHAN_FUZZ_RANDOM"] = "1"
        os.environ["HOICHAN_FUZZ_SEED"] = str(int.from_bytes(os.urandom(4), "big"))
    here = os.path.dirname(__file__)
    targets = [
        os.path.join(here, "test_reliability_fuzz_parsers.py"),
        os.path.join(here, "test_reliability_schemathesis.py"),
    ]
    return int(pytest.main(["-q", "-p", "no:cacheprovider", *(["-k", args.k] if args.k else []), *targets]))


if __name__ == "__main__":
    sys.exit(main())
