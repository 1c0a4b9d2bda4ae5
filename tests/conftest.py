"""Test configuration: hypothesis profiles and the import path of the shared checks.

Profiles: ``ci`` (default) keeps property tests to a modest number of examples with no
per-example deadline (the 2-core CI machine is shared); ``dev`` runs more examples. Pick one
with ``HYPOTHESIS_PROFILE=dev pytest ...``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# ``from _check import check_op`` works from every test folder (tests/ops, tests/nn, ...).
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
