"""Shared fixtures: the datakit root (tests that need it skip cleanly when it is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout under test wins over any installed copy
os.environ.setdefault("FACEPRIVACY_QUIET", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

DATAKIT = Path(os.environ.get("FACEPRIVACY_DATA", ROOT.parent / "shared" / "datakit"))


@pytest.fixture(scope="session")
def datakit() -> Path:
    """Path of ../shared/datakit; skips the test with a message when it is absent."""
    if not DATAKIT.is_dir():
        pytest.skip(f"datakit not found at {DATAKIT} (real-data test skipped)")
    return DATAKIT


@pytest.fixture(scope="session")
def celeba_root(datakit: Path) -> Path:
    p = datakit / "celeba_subset_aligned112"
    if not p.is_dir():
        pytest.skip(f"CelebA subset not found at {p}")
    return p
