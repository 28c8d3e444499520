"""The processed shards' two file formats: CSV text (the default) and Parquet.

    table = processed_table(rows)          # (n, 66) float32 -> an Arrow table of PARQUET_SCHEMA
    format_of("OUTPUT/run-x/train-00000-of-00002.parquet")   # -> "parquet"

Both hold the same values: the 65 features then the fare (CONTRACT.md section 4).
Parquet names its columns after `contract.PROCESSED_COLUMNS`, keeps the 10
numeric features and the fare as float32 and the 55 one-hot columns as int8
(0 or 1), so its values equal the CSV's read as float32. A reader finds a
shard's format from its name (`format_of`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from taxifare_core.contract import (
    COLS_DROPOFF_DISTRICT,
    COLS_MONTH,
    COLS_PICKUP_DISTRICT,
    COLS_WEEKDAY,
    N_PROCESSED_COLUMNS,
    PROCESSED_COLUMNS,
)

FORMATS = ("csv", "parquet")
SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}

ONE_HOT_COLUMNS = frozenset(
    j for group in (COLS_WEEKDAY, COLS_MONTH, COLS_PICKUP_DISTRICT, COLS_DROPOFF_DISTRICT)
    for j in range(N_PROCESSED_COLUMNS)[group]
)  # fmt: skip

PARQUET_SCHEMA = pa.schema(
    [pa.field(name, pa.int8() if j in ONE_HOT_COLUMNS else pa.float32()) for j, name in enumerate(PROCESSED_COLUMNS)]
)


def format_of(path: str) -> str:
    """The format of a shard by its name: parquet for .parquet, csv for any other (.csv, .csv.gz...)."""
    return "parquet" if str(path).endswith(SUFFIXES["parquet"]) else "csv"


def processed_table(rows: np.ndarray) -> pa.Table:
    """Processed rows (n, 66) float32 -> an Arrow table of PARQUET_SCHEMA (one-hot columns as int8)."""
    if rows.ndim != 2 or rows.shape[1] != N_PROCESSED_COLUMNS:
        raise ValueError(f"processed rows have {N_PROCESSED_COLUMNS} columns, got shape {rows.shape}")
    columns = [
        pa.array(rows[:, j].astype(np.int8) if j in ONE_HOT_COLUMNS else rows[:, j].astype(np.float32, copy=False))
        for j in range(N_PROCESSED_COLUMNS)
    ]
    return pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA)
