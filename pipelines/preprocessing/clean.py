"""The date window, the contract's cleaning rules and deduplication, as DoFns over batches of rides.

rides | ParDo(FilterDateWindowFn(min_date, max_date))   counts "outside_date_range"
      | CleanRides(dedupe="batch"|"global"|"none")       counts each contract rule and "duplicate"
"""

from __future__ import annotations

import time
from datetime import date, datetime

import apache_beam as beam
import numpy as np
import pandas as pd

from pipelines.preprocessing.tags import OUTSIDE_DATE_RANGE, counter
from pipelines.preprocessing.timers import record_since, stage_timer
from taxifare_core import contract
from taxifare_core.cleaning import clean, duplicate_mask

DEDUPE_MODES = ("batch", "global", "none")


def utc_nanoseconds(day: date | datetime | str) -> int:
    """Midnight UTC of a date (or an aware datetime) as epoch nanoseconds, the typed frames' unit."""
    stamp = pd.Timestamp(day)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


class FilterDateWindowFn(beam.DoFn):
    """Keep rides with min_date <= pickup <= max_date (BigQuery's BETWEEN of two midnights).

    A ride without a pickup time is kept: the missing-value rule drops and counts it.
    """

    def __init__(self, min_date, max_date):
        self.low, self.high = utc_nanoseconds(min_date), utc_nanoseconds(max_date)
        self.outside = counter(OUTSIDE_DATE_RANGE)
        self.timer = stage_timer("filter_clean")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        stamps = rides[contract.TIME_COLUMN]
        nanoseconds = stamps.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
        outside = stamps.notna().to_numpy() & ((nanoseconds < self.low) | (nanoseconds > self.high))
        if outside.any():
            self.outside.inc(int(outside.sum()))
            rides = rides[~outside]
        record_since(self.timer, started)
        if len(rides):
            yield rides


class CleanRidesFn(beam.DoFn):
    """Apply the contract's per-row rules (and, with dedupe, duplicates within the batch); count each rule.

    Duplicates are judged among the rows that pass the rules, as `clean` does, in a
    second step so each step's time is recorded apart.
    """

    def __init__(self, dedupe: bool):
        self.dedupe = dedupe
        self.dropped = {rule: counter(rule) for rule in contract.CLEANING_RULES}
        self.clean_timer, self.dedupe_timer = stage_timer("filter_clean"), stage_timer("dedupe")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        result = clean(rides, dedupe=False)
        for rule, count in result.dropped.value_counts().items():
            self.dropped[rule].inc(int(count))
        kept = result.kept
        record_since(self.clean_timer, started)
        if self.dedupe and len(kept):
            started = time.perf_counter()
            repeats = duplicate_mask(kept)
            if repeats.any():
                self.dropped[contract.RULE_DUPLICATE].inc(int(repeats.sum()))
                kept = kept[~repeats]
            record_since(self.dedupe_timer, started)
        if len(kept):
            yield kept


def rides_to_tuples(rides: pd.DataFrame):
    """Each ride's seven columns as a hashable tuple (time as epoch ns), the key of exact deduplication."""
    columns = [
        rides[c].to_numpy(dtype="datetime64[ns]").view(np.int64).tolist()
        if c == contract.TIME_COLUMN
        else rides[c].to_numpy(dtype=np.float64).tolist()
        for c in contract.RAW_COLUMNS
    ]
    return zip(*columns)


def tuples_to_rides(rows: list) -> pd.DataFrame:
    """Tuples of rides_to_tuples back to a typed rides frame."""
    columns = list(zip(*rows)) if rows else [[] for _ in contract.RAW_COLUMNS]
    frame = {}
    for name, values in zip(contract.RAW_COLUMNS, columns):
        if name == contract.TIME_COLUMN:
            frame[name] = pd.to_datetime(np.asarray(values, dtype=np.int64), utc=True)
        else:
            frame[name] = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(frame)


class KeepOneCopyFn(beam.DoFn):
    """(ride tuple, copies) -> the ride once; counts the extra copies as "duplicate"."""

    def __init__(self):
        self.duplicates = counter(contract.RULE_DUPLICATE)

    def process(self, element):
        ride, copies = element
        if copies > 1:
            self.duplicates.inc(copies - 1)
        yield ride


class DeduplicateGlobally(beam.PTransform):
    """Exact deduplication over the whole input: one element per ride through a shuffle, then re-batched.

    Memory on the local runners grows with the input (every ride is held by the
    shuffle); right for Dataflow, where the shuffle is a service.
    """

    def __init__(self, batch_rows: int):
        super().__init__()
        self.batch_rows = batch_rows

    def expand(self, rides):
        return (
            rides
            | "RidesToTuples" >> beam.FlatMap(rides_to_tuples)
            | "CountCopies" >> beam.combiners.Count.PerElement()
            | "KeepOneCopy" >> beam.ParDo(KeepOneCopyFn())
            | "Rebatch" >> beam.BatchElements(min_batch_size=self.batch_rows, max_batch_size=self.batch_rows)
            | "TuplesToRides" >> beam.Map(tuples_to_rides).with_output_types(pd.DataFrame)
        )


class CleanRides(beam.PTransform):
    """Typed rides -> clean rides, deduplicated per `dedupe` ("batch", "global" or "none")."""

    def __init__(self, dedupe: str = "batch", batch_rows: int = 100_000):
        super().__init__()
        if dedupe not in DEDUPE_MODES:
            raise ValueError(f"dedupe must be one of {DEDUPE_MODES}, got {dedupe!r}")
        self.dedupe = dedupe
        self.batch_rows = batch_rows

    def expand(self, rides):
        kept = rides | "ApplyRules" >> beam.ParDo(CleanRidesFn(dedupe=self.dedupe == "batch")).with_output_types(
            pd.DataFrame
        )
        if self.dedupe == "global":
            kept = kept | "DeduplicateGlobally" >> DeduplicateGlobally(self.batch_rows)
        return kept
