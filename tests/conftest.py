"""Shared test set-up: the real data sets in ../shared/data (or $DLSCOPE_DATA), small and quick."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# as dlscope/__init__.py does, before torch loads (test modules import torch before dlscope)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DLSCOPE_DATA", str(REPO.parent / "shared" / "data"))
# absolute, so that tests running commands in other folders find the data too
os.environ["DLSCOPE_DATA"] = str(Path(os.environ["DLSCOPE_DATA"]).resolve())
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = Path(os.environ["DLSCOPE_DATA"])
    if not (path / "cifar-10-batches-py").exists():
        pytest.fail(f"the data sets are expected in {path} (set DLSCOPE_DATA)")
    return str(path)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def float64():
    """Run a test in float64, so that equality between two implementations is tight."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
