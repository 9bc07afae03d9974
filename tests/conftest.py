"""Shared fixtures.

``shared_data`` points at the read-only real samples kept beside the repository
(``../shared/data``). A user's clone has no such folder: tests that need it are skipped
there with a reason, but fail in CI (``CI=true``), where the folder must exist.
"""

from __future__ import annotations

import os

# PyTorch's OpenMP threads spin while waiting by default, which slows a shared 2-core machine
# down many times over; this must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU the Triton kernel's tests run under Triton's interpreter, which must be chosen
# before anything imports Triton (tests/test_triton.py)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"real sample data not found at {SHARED_DATA} (it sits beside the repository)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must provide it")
    pytest.skip(message)
