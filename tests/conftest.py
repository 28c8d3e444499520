"""Shared pytest fixtures: generated rides, the real sample beside the project, isolated local paths.

Tests that check code run on `generated_rides_path` / `generated_rides_raw` (taxifare_core.generate,
seeded), so they run in every clone. Only claims about real data (the generator's calibration)
take `real_sample_path`, and skip when it is absent, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from taxifare_core.ride_shards import write_ride_shards

GENERATED_ROWS, GENERATED_SEED = 8000, 8
REAL_SAMPLE = Path(
    os.environ.get(
        "TAXIFARE_REAL_SAMPLE",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "nyc_taxi_fare_sample_8k.csv",
    )
)


@pytest.fixture(scope="session")
def real_sample_path() -> Path:
    """Path of the real 8k-ride sample; skips (saying so) when it is not beside the project.

    Only for claims about real rides; code checks use `generated_rides_path`.
    """
    if not REAL_SAMPLE.exists():
        pytest.skip(f"needs real rides: the real sample is not at {REAL_SAMPLE} (set TAXIFARE_REAL_SAMPLE)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def generated_rides_path(tmp_path_factory) -> Path:
    """One CSV of 8,000 generated raw rides with their usual dirt (seeded; 2009 to June 2015, like the real sample)."""
    [path] = write_ride_shards(tmp_path_factory.mktemp("generated_rides"), GENERATED_ROWS, GENERATED_SEED)
    return path


@pytest.fixture(scope="session")
def generated_rides_raw(generated_rides_path) -> pd.DataFrame:
    """The generated rides as raw text columns, exactly as in the file."""
    return pd.read_csv(generated_rides_path, dtype=str, keep_default_na=False)


@pytest.fixture(autouse=True)
def isolated_local_paths(tmp_path_factory, monkeypatch):
    """Point LOCAL_DATA_PATH / LOCAL_REGISTRY_PATH at temp folders so tests never touch ~/.lewagon."""
    root = tmp_path_factory.mktemp("lewagon")
    monkeypatch.setenv("LOCAL_DATA_PATH", str(root / "data"))
    monkeypatch.setenv("LOCAL_REGISTRY_PATH", str(root / "training_outputs"))
    return root


@pytest.fixture(scope="module")
def gs_root(request, tmp_path_factory):
    """gs://BUCKET (the test module's BUCKET) on a running GCS emulator, STORAGE_EMULATOR_HOST set for the module."""
    from emulator_helpers import running_gcs_emulator  # the emulator tooling loads only where a test asks for it

    with running_gcs_emulator(tmp_path_factory.mktemp("gcs"), request.module.BUCKET) as root:
        yield root
