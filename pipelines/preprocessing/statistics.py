"""Feature statistics in the preprocessing pass: a CombineFn over ProcessedBatches, train and val apart.

    stats_json = {"train": train_batches, "val": val_batches} | "Statistics" >> ComputeStatistics()
    stats_json | beam.io.WriteToText(f"{output}/{STATS_PARTS}", shard_name_template="", num_shards=1)

The CombineFn wraps taxifare_core.stats (numpy over each batch, accumulators of
constant size that merge exactly), so the runner may combine partial results in
any order on any worker (Dataflow lifts it before the shuffle). The result is one
JSON line {"splits": {"train": {...}, "val": {...}}} written by the pipeline; the
driver reads it back (`publish_statistics`), adds drift, and writes OUTPUT/stats.json
and OUTPUT/report.html.
"""
from __future__ import annotations

import json
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.preprocessing.threads import shutdown, slice_count, thread_pool
from taxifare_core import contract, stats
from taxifare_core.storage import outputs

# Stage-time distributions (microseconds per batch) live in the pipeline's counter namespace.
STAGE_NAMESPACE = "taxifare"
STAGE_PREFIX = "stage_us_"
STATS_PARTS = "stats-pipeline.json"  # the pipeline's one-line result, removed once stats.json is written
STATS_FILE = stats.STATS_FILE
REPORT_FILE = "report.html"
SPLITS = ("train", "val")
# Exit code of a run stopped by --fail_on_drift (after writing everything).
EXIT_DRIFT = 3


def stage_timer(stage: str):
    """A distribution of one stage's time per batch, in microseconds (record with `record_since`)."""
    return Metrics.distribution(STAGE_NAMESPACE, STAGE_PREFIX + stage)


def record_since(distribution, started: float) -> None:
    """Record the time since `started` (time.perf_counter()) in a stage distribution."""
    distribution.update(int((time.perf_counter() - started) * 1e6))


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
                bounds[:-1], bounds[1:])
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
    without any row gets its empty statistics from `publish_statistics`.
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
    """Write one element as a whole file (local or gs://); a retry rewrites the same content.

    For the one-line statistics: a sink (WriteToText) would add its own stages to every run.
    """
    with FileSystems.create(path) as handle:
        handle.write(text.encode())
    return path


# --- the driver's side ------------------------------------------------------------------


def read_text(path: str) -> str:
    """A text file through Beam's file systems (local or gs://)."""
    with FileSystems.open(path) as handle:
        return handle.read().decode()


def write_text(path: str, text: str) -> None:
    """Write a text file through Beam's file systems (local or gs://)."""
    with FileSystems.create(path) as handle:
        handle.write(text.encode())


def resolve_reference(location: str) -> tuple[str, dict]:
    """--compare_to: a run's output folder or its stats.json (local or gs://) -> (path, stats).

    stats.StatsError (one line) when it is missing or not a statistics file.
    """
    location = location.rstrip("/")
    try:
        path = outputs.published_path(location if location.endswith(".json") else f"{location}/{STATS_FILE}")
        found = FileSystems.exists(path)
        text = read_text(path) if found else None
    except Exception as error:  # noqa: BLE001 - a file system's own error, reported in one line
        raise stats.StatsError(f"--compare_to {location}: {str(error).splitlines()[0]}") from None
    if not found:
        where = "" if path == location else f" (looked for {path})"
        raise stats.StatsError(f"--compare_to {location}: no statistics file found{where}")
    return path, stats.parse_stats(text, f"--compare_to {path}")


def run_drift(splits: dict, reference: tuple[str, dict] | None) -> dict:
    """Drift of a run: against a reference run (all kept rows of each), else val against train."""
    if reference is not None:
        path, payload = reference
        current = stats.combine_splits([splits[name] for name in SPLITS if name in splits])
        baseline = stats.combine_splits(list(payload["splits"].values()))
        return stats.drift_report(current, baseline, path, "this run (train + val)")
    return stats.drift_report(splits["val"], splits["train"], "train (this run)", "val (this run)",
                              expected=stats.EXPECTED_VAL_DRIFT)


def publish_statistics(output: str, summary: dict, compare_to: str | None = None) -> dict | None:
    """Read the pipeline's statistics, add drift, write OUTPUT/stats.json and OUTPUT/report.html.

    Returns the drift record.
    """
    from taxifare_core.report import render_report

    parts = f"{output}/{STATS_PARTS}"
    found = FileSystems.exists(parts)
    payload = json.loads(read_text(parts) if found else splits_json({}))  # no file: no row was kept
    reference = resolve_reference(compare_to) if compare_to else None
    payload["drift"] = run_drift(payload["splits"], reference)
    write_text(f"{output}/{STATS_FILE}", json.dumps(payload, indent=1) + "\n")
    write_text(f"{output}/{REPORT_FILE}", render_report(summary, payload, reference[1] if reference else None))
    if found:
        FileSystems.delete([parts])
    return payload["drift"]


def drift_lines(drift: dict | None) -> list[str]:
    """The drift verdict as printed under the summary table."""
    if not drift:
        return []
    scores = drift["scores"]
    lines = [f"drift ({drift['current']} vs {drift['reference']}, PSI > {drift['threshold']} flagged):"]
    if drift["flagged"]:
        lines += [f"  FLAGGED {name}: PSI {scores[name]:.3f}" for name in drift["flagged"]]
    else:
        lines.append("  nothing flagged")
    lines += [f"  expected (chronological split) {name}: PSI {scores[name]:.3f}" for name in drift["expected"]
              if scores.get(name) is not None]
    return lines


def print_drift(drift: dict | None, file=sys.stdout) -> None:
    """Print drift_lines."""
    for line in drift_lines(drift):
        print(line, file=file)
