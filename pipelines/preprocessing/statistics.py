"""Feature statistics in the preprocessing pass: a CombineFn over ProcessedBatches, train and val apart.

    stats_json = {"train": train_batches, "val": val_batches} | "Statistics" >> ComputeStatistics()
    stats_json | beam.Map(write_text_file, f"{run_dir}/{STATS_PARTS}")

The CombineFn wraps taxifare_core.stats (numpy over each batch, accumulators of
constant size that merge exactly), so the runner may combine partial results in
any order on any worker (Dataflow lifts it before the shuffle). The result is one
JSON line {"splits": {"train": {...}, "val": {...}}} written by the pipeline; the
driver reads it back, adds drift, and writes stats.json and report.html
(`pipelines.run_statistics.publish_statistics`).
"""

from __future__ import annotations

import json
import time

import apache_beam as beam
import numpy as np

from pipelines.preprocessing.threads import shutdown, slice_count, thread_pool
from pipelines.preprocessing.timers import record_since, stage_timer
from taxifare_core import contract, stats, storage

STATS_PARTS = "stats-pipeline.json"  # the pipeline's one-line result, removed once stats.json is written
SPLITS = ("train", "val")


def rows_of(batch):
    """(rows, pickup ns or None) of a ProcessedBatch (rows, pickup_ns) or a batch prediction block (features)."""
    if hasattr(batch, "rows"):
        return batch.rows, batch.pickup_ns
    return batch.features, None


class FeatureStatisticsFn(beam.CombineFn):
    """Batches of processed rows -> their statistics as stats.json holds them (one split).

    A batch is a ProcessedBatch (66 columns and pickup times) or, with n_columns=65,
    batch prediction's EncodedBlock (features only).
    """

    def __init__(self, n_columns: int = contract.N_PROCESSED_COLUMNS, threads: int | None = None):
        self.n_columns = n_columns
        self.threads = threads
        self.timer = stage_timer("statistics")

    def setup(self):
        self.pool, self.workers = thread_pool(self.threads)

    def create_accumulator(self):
        return stats.new_accumulator(self.n_columns)

    def add_input(self, accumulator, batch):
        started = time.perf_counter()
        rows, pickup_ns = rows_of(batch)
        if not hasattr(self, "workers"):  # a runner that calls no CombineFn.setup
            self.setup()
        slices = slice_count(len(rows), self.workers)
        if slices == 1:
            stats.add_batch(accumulator, rows, pickup_ns)
        else:
            # A big batch's slices on threads, merged exactly (Chan): the same statistics, sooner.
            bounds = np.linspace(0, len(rows), slices + 1).astype(int)
            parts = self.pool.map(
                lambda a, b: stats.batch_accumulator(rows[a:b], None if pickup_ns is None else pickup_ns[a:b]),
                bounds[:-1],
                bounds[1:],
            )
            for part in parts:
                stats.merge_into(accumulator, part)
        record_since(self.timer, started)
        return accumulator

    def merge_accumulators(self, accumulators):
        return stats.merge(accumulators)

    def extract_output(self, accumulator):
        return stats.finalize(accumulator)

    def teardown(self):
        shutdown(getattr(self, "pool", None))


def keyed(element, key: str):
    """(key, element), to combine several splits per key."""
    return key, element


def splits_json(finalized: dict) -> str:
    """{split: statistics} -> one JSON line {"splits": ...}, an empty split for one without rows."""
    splits = {name: finalized.get(name) or stats.empty_split() for name in SPLITS}
    return json.dumps({"splits": splits}, separators=(",", ":"))


class ComputeStatistics(beam.PTransform):
    """{"train": ProcessedBatches, "val": ProcessedBatches} -> one JSON text element {"splits": {...}}.

    Each split is combined on its own (CombineGlobally: the runner adds each batch to a
    partial accumulator where the batch is made, so batches are never shuffled or held);
    only the two small results meet in a Flatten. Without defaults (each would add
    stages to every run): a split without rows is filled in by `splits_json`, a run
    without any row gets its empty statistics from `pipelines.run_statistics.publish_statistics`.
    """

    def expand(self, batches):
        per_split = [
            batches[name]
            | f"Combine{name.capitalize()}" >> beam.CombineGlobally(FeatureStatisticsFn()).without_defaults()
            | f"Key{name.capitalize()}" >> beam.Map(keyed, name)
            for name in SPLITS
        ]
        return (
            per_split
            | "FlattenSplits" >> beam.Flatten()
            | "ToOneDict" >> beam.CombineGlobally(beam.combiners.ToDictCombineFn()).without_defaults()
            | "ToJson" >> beam.Map(splits_json)
        )


def write_text_file(text: str, path: str) -> str:
    """Write one element as a whole file (local or gs://, atomic); a retry rewrites the same content.

    For the one-line statistics: a sink (WriteToText) would add its own stages to every run.
    """
    storage.write_text(path, text)
    return path
