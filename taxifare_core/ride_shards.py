"""Generated rides as sharded CSV files with a header: the files `scripts/generate_rides.py` writes.

    paths = write_ride_shards("/tmp/rides", 1_000_000, seed=42, num_shards=4)   # rides-0000K-of-00004.csv

Shard k holds a contiguous range of rows (`taxifare_core.generate`: row i depends only
on the seed and i), streamed block by block through Arrow's CSV writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from taxifare_core import contract
from taxifare_core.generate import DEFAULT_SEED, ISO_SECONDS, TIME_INDEX, iter_tables, stamp_text

DEFAULT_PREFIX = "rides"
# The CSV form of a stamp is its ISO text plus a literal suffix (" UTC").
_CSV_TIME_SUFFIX = contract.CSV_TIME_FORMAT.removeprefix(ISO_SECONDS)
assert "%" not in _CSV_TIME_SUFFIX, contract.CSV_TIME_FORMAT


def _csv_table(table: pa.Table) -> pa.Table:
    """The table with its timestamps in the contract's CSV form."""
    stamps = table[contract.TIME_COLUMN].cast(pa.timestamp("s"))
    text = pc.binary_join_element_wise(stamp_text(stamps), _CSV_TIME_SUFFIX, "")
    return table.set_column(TIME_INDEX, contract.TIME_COLUMN, text)


def shard_paths(output_dir, num_shards: int, prefix: str = DEFAULT_PREFIX) -> list[Path]:
    """Shard file names, e.g. rides-00000-of-00004.csv."""
    names = (f"{prefix}-{k:05d}-of-{num_shards:05d}.csv" for k in range(num_shards))
    return [Path(output_dir) / name for name in names]


def write_ride_shards(
    output_dir,
    n_rows: int,
    seed: int = DEFAULT_SEED,
    num_shards: int = 1,
    prefix: str = DEFAULT_PREFIX,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Stream n_rows rides to num_shards CSVs (contiguous row ranges, header in each).

    Refuses a directory that already holds `{prefix}-*.csv` files unless `overwrite`
    (which deletes them first): a glob over the folder would mix two runs.
    `progress(rows_written)` is called after every block.
    """
    if n_rows < 0 or num_shards < 1:
        raise ValueError(f"need n_rows >= 0 and num_shards >= 1, got {n_rows} and {num_shards}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(output_dir.glob(f"{prefix}-*.csv"))
    if stale and not overwrite:
        raise FileExistsError(f"{output_dir} already holds {stale[0].name}; "
                              "overwrite=True (--overwrite) replaces them")  # fmt: skip
    for path in stale:
        path.unlink()
    header = (",".join(contract.RAW_COLUMNS_WITH_KEY) + "\n").encode()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    paths, written = shard_paths(output_dir, num_shards, prefix), 0
    for k, path in enumerate(paths):
        with open(path, "wb") as out:
            out.write(header)
            first, stop = k * n_rows // num_shards, (k + 1) * n_rows // num_shards
            for table in iter_tables(first, stop, seed):
                pa_csv.write_csv(_csv_table(table), out, options)
                written += table.num_rows
                if progress:
                    progress(written)
    return paths
