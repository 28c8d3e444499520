"""Shared pytest fixtures: the real sample beside the project, isolated local paths."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REAL_SAMPLE = Path(
    os.environ.get(
        "TAXIFARE_REAL_SAMPLE",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "nyc_taxi_fare_sample_8k.csv",
    )
)


@pytest.fixture(scope="session")
def real_sample_path() -> Path:
    """Path of the real 8k-ride sample; skips (saying so) when it is not beside the project."""
    if not REAL_SAMPLE.exists():
        pytest.skip(f"real sample not found at {REAL_SAMPLE} (set TAXIFARE_REAL_SAMPLE)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def real_sample_raw(real_sample_path) -> pd.DataFrame:
    """The real sample as raw text columns, exactly as in the file."""
    return pd.read_csv(real_sample_path, dtype=str, keep_default_na=False)


@pytest.fixture(autouse=True)
def isolated_local_paths(tmp_path_factory, monkeypatch):
    """Point LOCAL_DATA_PATH / LOCAL_REGISTRY_PATH at temp folders so tests never touch ~/.lewagon."""
    root = tmp_path_factory.mktemp("lewagon")
    monkeypatch.setenv("LOCAL_DATA_PATH", str(root / "data"))
    monkeypatch.setenv("LOCAL_REGISTRY_PATH", str(root / "training_outputs"))
    return root
