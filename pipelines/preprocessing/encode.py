"""Clean rides -> the 65 features + fare, the chronological split and the CSV text of the shards.

    rides | EncodeRides()          -> ProcessedBatch (n, 66) float32
          | SplitTrainVal(val_start) -> tagged "train" / "val", counted
          | FormatCsvLines()         -> one text element per batch (or per output shard)

Encoding and formatting spend their time in numpy and Arrow, which release the GIL:
big batches are cut in slices worked on by a few threads (same result, sooner).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pandas as pd

from pipelines.preprocessing.clean import utc_nanoseconds
from pipelines.preprocessing.coders import BatchCoder, batches_of
from pipelines.preprocessing.tags import TRAIN, TRAIN_ROWS, VAL, VAL_ROWS, counter
from pipelines.preprocessing.threads import shutdown, slice_count, thread_pool
from pipelines.preprocessing.timers import record_since, stage_timer
from taxifare_core import contract
from taxifare_core.features import format_csv, processed_rows


@dataclass(frozen=True)
class ProcessedBatch:
    """Processed rows (n, 66) float32 (65 features then fare) and each row's pickup time in epoch ns."""

    rows: np.ndarray
    pickup_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """Size of the arrays, for Beam's element size estimates."""
        return self.rows.nbytes + self.pickup_ns.nbytes


beam.coders.registry.register_coder(ProcessedBatch, BatchCoder)


def encode_rides(rides: pd.DataFrame) -> ProcessedBatch:
    """Clean rides -> their processed rows through taxifare_core (vectorized)."""
    stamps = rides[contract.TIME_COLUMN].dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ProcessedBatch(processed_rows(rides), stamps)


class EncodeRidesFn(beam.DoFn):
    """Clean rides DataFrame -> ProcessedBatch (the 65 features + fare); big batches in parallel slices."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def setup(self):
        self.pool, self.workers = thread_pool(self.threads)
        self.timer = stage_timer("encode")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        slices = slice_count(len(rides), self.workers)
        if slices == 1:
            batch = encode_rides(rides)
        else:
            bounds = np.linspace(0, len(rides), slices + 1).astype(int)
            parts = list(self.pool.map(encode_rides, [rides.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
            batch = ProcessedBatch(
                np.concatenate([p.rows for p in parts]), np.concatenate([p.pickup_ns for p in parts])
            )
        record_since(self.timer, started)
        yield batch

    def teardown(self):
        shutdown(getattr(self, "pool", None))


class EncodeRides(beam.PTransform):
    """Clean rides -> ProcessedBatch elements."""

    def expand(self, rides):
        return rides | "EncodeFeatures" >> beam.ParDo(EncodeRidesFn()).with_output_types(ProcessedBatch)


class SplitTrainValFn(beam.DoFn):
    """ProcessedBatch -> "train" (pickup before val_start) and "val" (from val_start on) outputs, counted."""

    def __init__(self, val_start):
        self.val_start = utc_nanoseconds(val_start)
        self.train_rows = counter(TRAIN_ROWS)
        self.val_rows = counter(VAL_ROWS)

    def process(self, batch: ProcessedBatch):
        is_val = batch.pickup_ns >= self.val_start
        n_val = int(is_val.sum())
        if n_val < len(batch):
            self.train_rows.inc(len(batch) - n_val)
            yield beam.pvalue.TaggedOutput(TRAIN, ProcessedBatch(batch.rows[~is_val], batch.pickup_ns[~is_val]))
        if n_val:
            self.val_rows.inc(n_val)
            yield beam.pvalue.TaggedOutput(VAL, ProcessedBatch(batch.rows[is_val], batch.pickup_ns[is_val]))


class SplitTrainVal(beam.PTransform):
    """ProcessedBatches -> {"train", "val"} chronologically at `val_start` (a date, midnight UTC)."""

    def __init__(self, val_start):
        super().__init__()
        self.val_start = val_start

    def expand(self, batches):
        outputs = batches | "SplitByDate" >> beam.ParDo(SplitTrainValFn(self.val_start)).with_outputs(TRAIN, VAL)
        return {TRAIN: batches_of(outputs[TRAIN], ProcessedBatch), VAL: batches_of(outputs[VAL], ProcessedBatch)}


class FormatCsvLinesFn(beam.DoFn):
    """ProcessedBatch -> CSV text: one element per batch, or `pieces` elements (one per output shard).

    Beam's sink deals a fixed shard count round-robin, so cutting every batch in
    `num_shards` pieces keeps the shards balanced. Big batches are formatted in
    slices on a few threads; the text is the same.
    """

    def __init__(self, threads: int | None = None, pieces: int = 1):
        self.threads = threads
        self.pieces = max(1, pieces)

    def setup(self):
        self.pool, self.workers = thread_pool(self.threads)
        self.timer = stage_timer("format")

    def process(self, batch: ProcessedBatch):
        if not len(batch):
            return
        started = time.perf_counter()
        slices = max(slice_count(len(batch), self.workers), min(self.pieces, len(batch)))
        if slices == 1:
            texts = [format_csv(batch.rows)]
        else:
            parts = np.array_split(batch.rows, slices)
            texts = list(self.pool.map(format_csv, parts) if self.pool else map(format_csv, parts))
        if self.pieces == 1 and len(texts) > 1:
            texts = ["\n".join(texts)]
        record_since(self.timer, started)
        yield from (text for text in texts if text)

    def teardown(self):
        shutdown(getattr(self, "pool", None))


class FormatCsvLines(beam.PTransform):
    """ProcessedBatches -> CSV text elements (many lines each), ready for WriteToText."""

    def __init__(self, threads: int | None = None, pieces: int = 1):
        super().__init__()
        self.threads = threads
        self.pieces = pieces

    def expand(self, batches):
        return batches | "FormatCsv" >> beam.ParDo(FormatCsvLinesFn(self.threads, self.pieces)).with_output_types(str)
