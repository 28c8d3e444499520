"""Streaming reader of processed shards: fixed-size chunks of (features, fares), any shard count.

Shards are the preprocessing pipeline's CSVs (65 features then fare, no header;
CONTRACT.md section 4) or its Parquet files (`--shard_format parquet`, the same
values: taxifare_core.shard_format), found by a glob on local disk or `gs://`; in a
published output folder a `train-*.csv` glob names the run's Parquet shards when it
wrote Parquet. Rows flow through pyarrow's streaming readers into one preallocated chunk at a time,
so memory depends on `chunk_size`, never on the dataset; chunks cross shard
boundaries, so their count follows `chunk_size`, not the number of shards.

    for features, fares in iter_chunks("/tmp/processed/train-*.csv", chunk_size=100_000):
        model.fit(features, fares)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxifare_core import storage
from taxifare_core.contract import N_FEATURES, N_PROCESSED_COLUMNS
from taxifare_core.shard_format import ONE_HOT_COLUMNS, format_of
from taxifare_core.storage import outputs

# pyarrow parses this many bytes per block: a block that fits the core's cache
# parses ~1.3x faster than 8 MB ones (measured on 2 MB of L2 per core).
BLOCK_BYTES = 1 << 20
# One parsing thread: the reader runs beside training, which needs the other cores
# (more threads cost more CPU in total for no faster training).
PARSE_THREADS = False
_COLUMN_NAMES = [f"c{j}" for j in range(N_PROCESSED_COLUMNS)]
# The 55 one-hot columns are written "0" / "1": parsed as integers they cost half
# of float parsing. A writer that spells them otherwise ("1.0") gets floats.
_FAST_TYPES = {name: pa.int8() if j in ONE_HOT_COLUMNS else pa.float32() for j, name in enumerate(_COLUMN_NAMES)}
_FLOAT_TYPES = {name: pa.float32() for name in _COLUMN_NAMES}


class ShardError(ValueError):
    """No shard matches the glob, or a shard is not a processed CSV."""


def shard_paths(pattern: str) -> list[str]:
    """The shards matching a glob, sorted; ShardError when none does or the set is incomplete.

    In a preprocessing output folder (one with a published summary.json), the
    glob names the published run's shards, each checked against the manifest
    (`taxifare_core.storage.outputs`); elsewhere it is a plain glob.
    """
    try:
        paths = outputs.resolve(pattern)
        if paths is None:
            paths = storage.glob(pattern)
            if not paths:
                raise ShardError(outputs.unfinished_hint(pattern) or f"no file matches {pattern}")
    except outputs.IncompleteOutputError as error:
        raise ShardError(str(error)) from None
    if not paths:
        raise ShardError(f"no file matches {pattern}")
    return paths


# How often a glob is resolved again when its run folder is replaced while a lease is being taken.
_LEASE_ATTEMPTS = 3


def leased_shard_paths(pattern: str) -> tuple[list[str], outputs.ReadLease]:
    """shard_paths, with a lease that keeps their run folder from being removed by a newer run while held.

    The caller releases the lease once done reading. ShardError when the glob's
    run keeps being replaced while the lease is taken.
    """
    for _ in range(_LEASE_ATTEMPTS):
        paths = shard_paths(pattern)
        lease = outputs.ReadLease(paths)
        if lease.acquire():
            return paths, lease
    raise ShardError(f"the shards of {pattern} keep being replaced by newer runs: try again once they are done")


def _gone(path: str) -> ShardError:
    """The one line for a shard removed while it was being read (a reader without a lease: gs://, no marker)."""
    return ShardError(
        f"{path} is gone: the shards changed while they were read (a newer run published into "
        "their folder); start a new run"
    )


def _open_stream(path: str, column_types: dict):
    """pyarrow's streaming CSV reader over one shard (local or gs://, both read by Arrow; compression by extension)."""
    try:
        stream = storage.open_input_stream(path)
    except FileNotFoundError:
        raise _gone(path) from None
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=_COLUMN_NAMES, block_size=BLOCK_BYTES, use_threads=PARSE_THREADS),
        convert_options=pacsv.ConvertOptions(column_types=column_types),
    )


def _iter_batches(path: str, column_types: dict = _FAST_TYPES) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard; an empty shard yields nothing.

    With integer one-hot columns, a value they cannot hold ("1.0") restarts the
    shard with float columns, past the rows already yielded.
    """
    try:
        reader = _open_stream(path, column_types)
    except pa.ArrowInvalid as error:
        if "Empty CSV file" in str(error):
            return
        if column_types is not _FLOAT_TYPES:
            yield from _iter_batches(path, _FLOAT_TYPES)
            return
        raise ShardError(f"{path}: not a processed CSV ({error})") from None
    yielded = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            if column_types is not _FLOAT_TYPES:
                yield from _skip_rows(_iter_batches(path, _FLOAT_TYPES), yielded)
                return
            raise ShardError(
                f"{path}: not a processed CSV of {N_PROCESSED_COLUMNS} numeric columns ({error})"
            ) from None
        if batch.num_rows:
            yielded += batch.num_rows
            yield batch


def _skip_rows(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """`batches` after their first `rows` rows."""
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def _iter_parquet_batches(path: str) -> Iterator[pa.RecordBatch]:
    """Record batches of one Parquet shard, one row group at a time; ShardError for another file."""
    try:
        shard = pq.ParquetFile(storage.open_input_file(path))
    except FileNotFoundError:
        raise _gone(path) from None
    except (pa.ArrowInvalid, OSError) as error:
        raise ShardError(f"{path}: not a processed Parquet shard ({error})") from None
    if shard.metadata.num_columns != N_PROCESSED_COLUMNS:
        raise ShardError(
            f"{path}: not a processed Parquet shard ({shard.metadata.num_columns} columns, "
            f"{N_PROCESSED_COLUMNS} expected)"
        )
    for index in range(shard.num_row_groups):
        for piece in shard.read_row_group(index, use_threads=PARSE_THREADS).to_batches():
            if piece.num_rows:
                yield piece


def _iter_row_blocks(paths: list[str]) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """(path, line (Parquet: row) number of the batch's first row, batch) over every shard in order."""
    for path in paths:
        first_line = 1
        batches = _iter_parquet_batches(path) if format_of(path) == "parquet" else _iter_batches(path)
        for batch in batches:
            yield path, first_line, batch
            first_line += batch.num_rows


def _rows_of(batch: pa.RecordBatch, path: str, first_line: int) -> np.ndarray:
    """A record batch as a row-major float32 (n, 66) matrix.

    ShardError on an empty or NaN value (Arrow reads "nan" as null) and on an
    infinite one ("inf", or a number past float32's range such as 1e39): a
    processed shard holds finite numbers only, and one infinite value turns the
    whole model into NaN. The check is one vectorized pass per block; the line
    is looked up only when it fails.
    """
    nulls = [j for j, column in enumerate(batch.columns) if column.null_count]
    if nulls:
        line = first_line + int(np.flatnonzero(batch.column(nulls[0]).is_null().to_numpy(zero_copy_only=False))[0])
        raise ShardError(
            f"{path}: line {line}: empty or NaN value in column {nulls[0]} of a processed row "
            "(processed shards hold finite numbers only: re-run preprocessing)"
        )
    rows = np.empty((batch.num_rows, N_PROCESSED_COLUMNS), dtype=np.float32)
    for j, column in enumerate(batch.columns):
        rows[:, j] = column.to_numpy()
    if not np.isfinite(rows).all():
        row, column = np.argwhere(~np.isfinite(rows))[0]
        raise ShardError(
            f"{path}: line {first_line + int(row)}: non-finite value {rows[row, column]} in column "
            f"{int(column)} (processed shards hold finite numbers only: re-run preprocessing)"
        )
    return rows


def estimate_rows(paths: list[str]) -> int:
    """The shards' row count, for a progress line's ETA: exact for Parquet (its footers), estimated for CSV
    (total bytes / the bytes per line of the first shard's first MB); 0 when unknown."""
    rows, csv_bytes = 0, 0
    for path in paths:
        if format_of(path) == "parquet":
            with storage.open_input_file(path) as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
        else:
            csv_bytes += storage.size(path)
    if csv_bytes:
        sample = next((p for p in paths if format_of(p) == "csv"), None)
        with storage.open_input_stream(sample) as stream:
            head = stream.read(BLOCK_BYTES)
        lines = head.count(b"\n")
        if lines:
            rows += round(csv_bytes * lines / len(head))
    return rows


def _chunks(paths: list[str], chunk_size: int, skip_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of exactly `chunk_size` rows (the last may be shorter), after `skip_rows` rows."""
    features = np.empty((chunk_size, N_FEATURES), dtype=np.float32)
    fares = np.empty(chunk_size, dtype=np.float32)
    filled, to_skip = 0, skip_rows
    for path, first_line, batch in _iter_row_blocks(paths):
        if to_skip >= batch.num_rows:
            to_skip -= batch.num_rows
            continue
        rows = _rows_of(batch, path, first_line)[to_skip:]
        to_skip, start = 0, 0
        while start < len(rows):
            take = min(chunk_size - filled, len(rows) - start)
            features[filled : filled + take] = rows[start : start + take, :N_FEATURES]
            fares[filled : filled + take] = rows[start : start + take, N_FEATURES]
            filled, start = filled + take, start + take
            if filled == chunk_size:
                yield features, fares
                # A fresh buffer: the consumer may still hold the previous one.
                features = np.empty((chunk_size, N_FEATURES), dtype=np.float32)
                fares = np.empty(chunk_size, dtype=np.float32)
                filled = 0
    if filled:
        yield features[:filled], fares[:filled]


def _prefetched(iterator: Iterator, depth: int) -> Iterator:
    """Run `iterator` in a background thread, `depth` items ahead (pyarrow parses without the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                items.put(item)
            items.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            items.put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()  # a generator's own clean-up (its read lease) runs now, not at garbage collection

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass


def iter_chunks(
    pattern: str, chunk_size: int, skip_rows: int = 0, prefetch: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features float32 (n, 65), fares float32 (n,)) chunks over all shards of `pattern`.

    `skip_rows` resumes after that many rows; `prefetch` chunks are read ahead
    in a thread while the caller trains (0: read in the caller's thread).
    The shards' run folder is leased while the chunks are read (`leased_shard_paths`),
    so a preprocessing run publishing into the same folder meanwhile keeps it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    paths, lease = leased_shard_paths(pattern)
    chunks = _leased(_chunks(paths, chunk_size, skip_rows), lease)
    return _prefetched(chunks, prefetch) if prefetch > 0 else chunks


def _leased(items: Iterator, lease: outputs.ReadLease) -> Iterator:
    """`items`, releasing `lease` when they end or the consumer stops."""
    try:
        yield from items
    finally:
        lease.release()


def read_rows(pattern: str, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `max_rows` rows of the shards (a bounded sample), as (features, fares).

    Memory follows the rows actually read, not `max_rows`: a bound far above the
    shards' size (`--max_val_rows 1000000000`) reads them all and allocates no more.
    """
    blocks, total = [], 0
    paths, lease = leased_shard_paths(pattern)
    try:
        for path, first_line, batch in _iter_row_blocks(paths):
            rows = _rows_of(batch, path, first_line)[: max_rows - total]
            blocks.append(rows)
            total += len(rows)
            if total >= max_rows:
                break
    finally:
        lease.release()
    if not blocks:
        return np.empty((0, N_FEATURES), dtype=np.float32), np.empty(0, dtype=np.float32)
    rows = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    del blocks
    return np.ascontiguousarray(rows[:, :N_FEATURES]), rows[:, N_FEATURES].copy()
