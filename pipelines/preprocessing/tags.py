"""Names the preprocessing steps share: output tags, counter names (Beam metrics namespace), stages.

Every row read ends in exactly one counter: rows read = bad input + each drop rule +
duplicates + train + val (`pipelines.preprocessing.summary` checks it).
"""

from __future__ import annotations

import logging

from apache_beam.metrics import Metrics

from taxifare_core import contract

COUNTER_NAMESPACE = "taxifare"


ROWS_READ = "rows_read"


BAD_INPUT = "bad_input"


OUTSIDE_DATE_RANGE = "outside_date_range"


TRAIN_ROWS = "train_rows"


VAL_ROWS = "val_rows"


# Rows dropped by a filter, in the order they are applied: the date window, then the contract's rules.
DROP_RULES = (OUTSIDE_DATE_RANGE, *contract.ROW_RULES)


RIDES, DEAD_LETTER, TRAIN, VAL, RAW = "rides", "dead_letter", "train", "val", "raw"


# PreprocessRides' processed (not yet formatted) batches of each split, for the statistics.
TRAIN_BATCHES, VAL_BATCHES = "train_batches", "val_batches"


# Stages timed per batch (Metrics distributions, see pipelines.preprocessing.timers.stage_timer), in pipeline order.
STAGES = ("parse", "filter_clean", "dedupe", "encode", "statistics", "format")


# Progress lines (one per block read); the CLI shows them on stderr for the in-process runner.
PROGRESS = logging.getLogger("pipelines.progress")


def counter(name: str):
    """A counter of this pipeline's namespace."""
    return Metrics.counter(COUNTER_NAMESPACE, name)
