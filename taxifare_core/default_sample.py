"""The embedded default data: generated rides written once under the local data path, then reused.

    glob = ensure_default_sample()    # $LOCAL_DATA_PATH/raw/generated_100000_seed42/rides-*.csv

Remade when an older generator made it (`taxifare_core.generate.GENERATOR_VERSION`,
recorded in the folder's sample.json); written beside its final name and renamed, so an
interrupted run never leaves half a sample.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from taxifare_core import contract
from taxifare_core.generate import DEFAULT_SEED, GENERATOR_VERSION
from taxifare_core.ride_shards import DEFAULT_PREFIX, write_ride_shards

DEFAULT_SAMPLE_ROWS = 100_000
SAMPLE_MANIFEST = "sample.json"


def default_sample_dir(n_rows: int = DEFAULT_SAMPLE_ROWS, seed: int = DEFAULT_SEED) -> Path:
    """Where the embedded default sample lives, under the local data path."""
    return contract.local_data_path() / "raw" / f"generated_{n_rows}_seed{seed}"


def ensure_default_sample(
    n_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = DEFAULT_SEED,
    num_shards: int = 1,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Generate the default sample once (again if an older generator made it); return the glob of its CSVs."""
    final = default_sample_dir(n_rows, seed)
    manifest = {"rows": n_rows, "seed": seed, "generator_version": GENERATOR_VERSION}
    if final.is_dir() and _read_manifest(final) != manifest:
        shutil.rmtree(final)
    if not final.is_dir():
        # Write beside it, then rename: an interrupted run never leaves a half sample.
        temp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        try:
            write_ride_shards(temp, n_rows, seed, num_shards, progress=progress)
            (temp / SAMPLE_MANIFEST).write_text(json.dumps(manifest))
            temp.rename(final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            if not final.is_dir():  # else another process finished first, with the same rows
                raise
    return str(final / f"{DEFAULT_PREFIX}-*.csv")


def _read_manifest(folder: Path) -> dict | None:
    """What a sample folder says made it; None when it says nothing readable."""
    try:
        return json.loads((folder / SAMPLE_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
