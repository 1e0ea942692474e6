"""Shared settings for the hypothesis fuzzers: seeded and bounded in CI, longer on demand.

``HOICHAN_FUZZ_EXAMPLES_PROPERTY`` (default 150) sets the examples per property; ``python -m
tests.reliability.fuzz --examples 20000 [--random]`` is the longer run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("HOICHAN_FUZZ_EXAMPLES_PROPERTY", "150"))

settings.register_profile(
    "reliability-ci",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("HOICHAN_FUZZ_RANDOM"),  # seeded: the same inputs on every CI run
    suppress_health_check=list(HealthCheck),
)
CI = settings.get_profile("reliability-ci")
