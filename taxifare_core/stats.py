"""Feature statistics of processed rows: fixed histogram edges and mergeable accumulators.

Pure numpy, no Beam: `pipelines.preprocessing.statistics` wraps these functions in a CombineFn,
batch prediction and tests call them directly. Drift between two such statistics is
`taxifare_core.drift`; the stats.json file (its check, its copy beside a model) is
`taxifare_core.stats_file`.

    acc = new_accumulator()                      # 66 columns (65 for features without the fare)
    add_batch(acc, rows, pickup_ns)              # rows (n, 66) float32, vectorized over the batch
    acc = merge([acc, other])                    # exact, in any order (Chan et al. for mean/variance)
    split = finalize(acc)                        # {"rows", "columns": [...], "rides_per_month", ...}

Histograms use fixed edges per column (`COLUMN_EDGES`, documented in
docs/statistics.md), so histograms from different runs and machines add up and
compare bin by bin. A value below the first edge is counted in the first bin,
one above the last edge in the last bin: every value is counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taxifare_core import contract

# --- the fixed bin edges (one home; docs/statistics.md shows them) -------------------

# Columns with values 0 or 1: histogram bins [0, 0.5) and [0.5, 1], i.e. "0" and "1".
ONE_HOT_COLUMNS = tuple(
    name for name in contract.FEATURE_NAMES if name.startswith(("weekday_", "month_", "pickup_", "dropoff_"))
)
# The other columns, with their bins: (first edge, bin width, regular bins, overflow edge or None).
# The overflow edge closes one last, wider bin above the regular ones.
NUMERIC_BINS = {
    # (passengers - 1) / 7: one bin centred on each of the 7 allowed counts.
    "passenger_count_scaled": (-0.5 / contract.PASSENGER_SCALE, 1 / contract.PASSENGER_SCALE, 7, None),
    # days / 2090: bins of 0.01 (20.9 days) from 2009-01-01 to 0.012 * 2090 days later (2015-11).
    "days_since_2009_scaled": (0.0, 0.01, 120, None),
    # sin / cos of the local hour: 24 discrete values in [-1, 1], each well inside a bin of 0.1.
    "hour_sin": (-1.05, 0.1, 21, None),
    "hour_cos": (-1.05, 0.1, 21, None),
    # km / 100: 0.5 km bins up to 50 km, then one bin up to 120 km (more than the contract's box allows).
    "haversine_km_scaled": (0.0, 0.005, 100, 1.2),
    "manhattan_km_scaled": (0.0, 0.005, 100, 1.2),
    # USD: $1 bins up to $100, then one bin up to the contract's $400 bound.
    contract.LABEL_COLUMN: (0.0, 1.0, 100, contract.FARE_MAX_EXCLUSIVE),
}
assert set(NUMERIC_BINS) | set(ONE_HOT_COLUMNS) == set(contract.PROCESSED_COLUMNS)


def _edges(name: str) -> np.ndarray:
    """The histogram edges of one processed column."""
    if name in ONE_HOT_COLUMNS:
        return np.array([0.0, 0.5, 1.0])
    low, width, bins, overflow = NUMERIC_BINS[name]
    # np.linspace: the very edges np.histogram uses for a range, so its fast path bins exactly by these.
    edges = np.linspace(low, low + width * bins, bins + 1)
    return edges if overflow is None else np.append(edges, overflow)


COLUMN_EDGES = {name: _edges(name) for name in contract.PROCESSED_COLUMNS}

HOURS = 24


# --- the accumulator --------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where each of the first `n_columns` processed columns sits in the accumulator's arrays."""

    n_columns: int
    names: tuple[str, ...]
    numeric: np.ndarray  # column indices binned by their regular grid
    one_hot_slices: tuple[slice, ...]  # contiguous runs of one-hot columns
    offsets: np.ndarray  # first histogram bin of each column in the flat counts array
    total_bins: int


def _layout(n_columns: int) -> _Layout:
    names = contract.PROCESSED_COLUMNS[:n_columns]
    numeric = np.array([j for j, name in enumerate(names) if name in NUMERIC_BINS], dtype=np.intp)
    runs, start = [], None
    for j, name in enumerate((*names, "")):
        if name in ONE_HOT_COLUMNS and start is None:
            start = j
        elif name not in ONE_HOT_COLUMNS and start is not None:
            runs.append(slice(start, j))
            start = None
    sizes = [len(COLUMN_EDGES[name]) - 1 for name in names]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
    return _Layout(n_columns, names, numeric, tuple(runs), offsets[:-1], int(offsets[-1]))


_LAYOUTS = {n: _layout(n) for n in (contract.N_FEATURES, contract.N_PROCESSED_COLUMNS)}


@dataclass
class Accumulator:
    """Running statistics of processed rows; constant size whatever the number of rows.

    mean and m2 (sum of squared deviations) per column merge exactly by Chan et al.'s
    pairwise formula; histograms, months and hours are counts that add up.
    """

    n_columns: int
    count: int = 0
    mean: np.ndarray = None
    m2: np.ndarray = None
    minimum: np.ndarray = None
    maximum: np.ndarray = None
    histogram: np.ndarray = None
    # Months since 1970-01 of the local (New York) pickup -> rides.
    months: dict = field(default_factory=dict)
    hours: np.ndarray = None  # rides per local pickup hour, 0..23

    def __post_init__(self):
        layout = _LAYOUTS[self.n_columns]
        c = self.n_columns
        self.mean = np.zeros(c) if self.mean is None else self.mean
        self.m2 = np.zeros(c) if self.m2 is None else self.m2
        self.minimum = np.full(c, np.inf) if self.minimum is None else self.minimum
        self.maximum = np.full(c, -np.inf) if self.maximum is None else self.maximum
        self.histogram = np.zeros(layout.total_bins, np.int64) if self.histogram is None else self.histogram
        self.hours = np.zeros(HOURS, np.int64) if self.hours is None else self.hours


def new_accumulator(n_columns: int = contract.N_PROCESSED_COLUMNS) -> Accumulator:
    """An empty accumulator for the first `n_columns` processed columns (66, or 65 without the fare)."""
    if n_columns not in _LAYOUTS:
        raise ValueError(
            f"statistics cover {contract.N_FEATURES} or {contract.N_PROCESSED_COLUMNS} columns, got {n_columns}"
        )
    return Accumulator(n_columns)


def numeric_histogram(values: np.ndarray, name: str) -> np.ndarray:
    """Counts per bin of COLUMN_EDGES[name], as np.histogram would give for values clipped to the edges.

    The regular bins through np.histogram's fast path for equal bins (a multiplication,
    not a search); values in the overflow bin are counted apart.
    """
    low, _, regular, overflow = NUMERIC_BINS[name]
    high = COLUMN_EDGES[name][regular]
    counts, _ = np.histogram(np.clip(values, low, high), bins=regular, range=(low, high))
    if overflow is None:
        return counts
    above = int(np.count_nonzero(values >= high))
    counts[-1] -= above  # np.histogram's last bin is closed: it counted the clipped values at `high`
    return np.append(counts, above)


# Start of each New York month from 1900 to 2100, in UTC epoch nanoseconds (daylight saving included).
_FIRST_MONTH = (1900 - 1970) * 12
_LOCAL_MONTH_STARTS = (
    pd.date_range("1900-01-01", "2101-01-01", freq="MS", tz=contract.LOCAL_TIMEZONE)
    .tz_convert("UTC")
    .as_unit("ns")
    .asi8
)


def _local_month_index(rows: np.ndarray, pickup_ns: np.ndarray | None) -> np.ndarray:
    """Months since 1970-01 of each ride's pickup in New York local time (the month one-hot's clock).

    A ride at 2013-01-01 02:00 UTC is December 2012 in New York, and counts there.
    Without pickup times (batch prediction) the time comes from days_since_2009 (float32: ~20 s).
    """
    if pickup_ns is None:
        days = rows[:, contract.COL_DAYS].astype(np.float64) * contract.DAYS_SCALE
        origin = np.datetime64(contract.TIME_ORIGIN.replace(tzinfo=None), "ns").astype(np.int64)
        pickup_ns = origin + np.rint(days * 86_400e9).astype(np.int64)
    # Only the months this batch spans: a short table keeps the search in cache.
    first = max(int(np.searchsorted(_LOCAL_MONTH_STARTS, pickup_ns.min(), side="right")) - 1, 0)
    last = int(np.searchsorted(_LOCAL_MONTH_STARTS, pickup_ns.max(), side="right"))
    index = np.searchsorted(_LOCAL_MONTH_STARTS[first:last], pickup_ns, side="right") - 1
    return np.maximum(index, 0) + first + _FIRST_MONTH


def _local_hours(rows: np.ndarray) -> np.ndarray:
    """The integer local hour of each ride, back from its sin / cos columns."""
    angle = np.arctan2(rows[:, contract.COL_HOUR_SIN].astype(np.float64), rows[:, contract.COL_HOUR_COS])
    return np.rint(angle * HOURS / (2 * np.pi)).astype(np.intp) % HOURS


def _count_equal(rows: np.ndarray, value: float) -> np.ndarray:
    """How many rows equal `value`, per column (a byte mask summed: far cheaper than count_nonzero per axis)."""
    return np.add.reduce((rows == value).view(np.uint8), axis=0, dtype=np.int64)


def _one_hot_run(
    acc: Accumulator, layout: _Layout, block: np.ndarray, run: slice, ones: np.ndarray, zeros: np.ndarray
) -> None:
    """Fill a run of one-hot columns' moments, extremes and histograms into a fresh batch accumulator.

    When every value is exactly 0 or 1 (ones + zeros = rows, as the contract encodes them)
    all of it follows from the count of ones; any other value takes the general path.
    """
    n = len(block)
    if np.array_equal(ones + zeros, np.full(len(ones), n)):
        total = squares = ones.astype(np.float64)
        minimum, maximum = (ones == n).astype(np.float64), (ones > 0).astype(np.float64)
    else:
        total = block.sum(axis=0, dtype=np.float64)
        squares = np.einsum("ij,ij->j", block, block, dtype=np.float64)
        minimum, maximum = np.fmin.reduce(block, axis=0), np.fmax.reduce(block, axis=0)
        ones = np.add.reduce((block >= 0.5).view(np.uint8), axis=0, dtype=np.int64)
    mean = total / n
    acc.mean[run] = mean
    # Values in [0, 1]: no cancellation worth the name (0/1 values give n p (1 - p) exactly).
    acc.m2[run] = np.maximum(squares - total * mean, 0.0)
    acc.minimum[run], acc.maximum[run] = minimum, maximum
    first, width = layout.offsets[run.start], 2 * (run.stop - run.start)
    acc.histogram[first : first + width : 2] = n - ones
    acc.histogram[first + 1 : first + width : 2] = ones


def batch_accumulator(rows: np.ndarray, pickup_ns: np.ndarray | None = None) -> Accumulator:
    """The statistics of one batch of processed rows (n, 65 or 66), vectorized over columns."""
    rows = np.asarray(rows)
    n, c = rows.shape
    layout = _LAYOUTS[c]
    acc = Accumulator(c)
    if n == 0:
        return acc
    acc.count = n
    numeric = rows[:, layout.numeric].astype(np.float64)
    mean = numeric.mean(axis=0)
    deviation = numeric - mean
    acc.mean[layout.numeric] = mean
    acc.m2[layout.numeric] = np.einsum("ij,ij->j", deviation, deviation)
    acc.minimum[layout.numeric] = np.fmin.reduce(numeric, axis=0)
    acc.maximum[layout.numeric] = np.fmax.reduce(numeric, axis=0)
    for position, j in enumerate(layout.numeric):
        counts = numeric_histogram(numeric[:, position], layout.names[j])
        acc.histogram[layout.offsets[j] : layout.offsets[j] + len(counts)] = counts
    ones, zeros = _count_equal(rows, 1.0), _count_equal(rows, 0.0)
    for run in layout.one_hot_slices:
        _one_hot_run(acc, layout, rows[:, run], run, ones[run], zeros[run])
    months = _local_month_index(rows, pickup_ns)
    first_month = int(months.min())
    counts = np.bincount(months - first_month)
    acc.months = {first_month + int(k): int(counts[k]) for k in np.flatnonzero(counts)}
    acc.hours = np.bincount(_local_hours(rows), minlength=HOURS).astype(np.int64)
    return acc


def merge_into(target: Accumulator, other: Accumulator) -> Accumulator:
    """Add `other` into `target` (mutated and returned): Chan et al.'s merge of (count, mean, m2)."""
    if other.n_columns != target.n_columns:
        raise ValueError(f"cannot merge statistics of {other.n_columns} and {target.n_columns} columns")
    if other.count == 0:
        return target
    if target.count == 0:
        target.count, target.mean, target.m2 = other.count, other.mean.copy(), other.m2.copy()
    else:
        n_a, n_b = target.count, other.count
        n = n_a + n_b
        delta = other.mean - target.mean
        target.mean = target.mean + delta * (n_b / n)
        target.m2 = target.m2 + other.m2 + delta * delta * (n_a * n_b / n)
        target.count = n
    target.minimum = np.fmin(target.minimum, other.minimum)
    target.maximum = np.fmax(target.maximum, other.maximum)
    target.histogram = target.histogram + other.histogram
    for month, rides in other.months.items():
        target.months[month] = target.months.get(month, 0) + rides
    target.hours = target.hours + other.hours
    return target


def add_batch(acc: Accumulator, rows: np.ndarray, pickup_ns: np.ndarray | None = None) -> Accumulator:
    """Add one batch of processed rows to `acc` (mutated and returned)."""
    return merge_into(acc, batch_accumulator(rows, pickup_ns))


def merge(accumulators) -> Accumulator:
    """One accumulator holding all of them (the first is reused)."""
    accumulators = iter(accumulators)
    result = next(accumulators)
    for other in accumulators:
        merge_into(result, other)
    return result


# --- the JSON shape -------------------------------------------------------------------


def month_label(index: int) -> str:
    """Months since 1970-01 -> 'YYYY-MM'."""
    return f"{1970 + index // 12:04d}-{index % 12 + 1:02d}"


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def finalize(acc: Accumulator) -> dict:
    """The statistics of one split as stats.json holds them (std is the population one, ddof=0)."""
    layout = _LAYOUTS[acc.n_columns]
    columns = []
    for j, name in enumerate(layout.names):
        edges = COLUMN_EDGES[name]
        counts = acc.histogram[layout.offsets[j] : layout.offsets[j] + len(edges) - 1]
        empty = acc.count == 0
        columns.append(
            {
                "name": name,
                "count": int(acc.count),
                "mean": None if empty else float(acc.mean[j]),
                "std": None if empty else float(math.sqrt(max(acc.m2[j], 0.0) / acc.count)),
                "min": None if empty else _number(acc.minimum[j]),
                "max": None if empty else _number(acc.maximum[j]),
                "histogram": {"edges": [float(e) for e in edges], "counts": [int(k) for k in counts]},
            }
        )
    return {
        "rows": int(acc.count),
        "columns": columns,
        "rides_per_month": {month_label(m): int(acc.months[m]) for m in sorted(acc.months)},
        "rides_per_hour": [int(k) for k in acc.hours],
    }


def empty_split(n_columns: int = contract.N_PROCESSED_COLUMNS) -> dict:
    """The statistics of a split without rows."""
    return finalize(new_accumulator(n_columns))


def combine_splits(splits: list[dict]) -> dict:
    """Counts of several finalized splits added up (rows, histograms, months, hours): the whole run.

    Only the counts: the moments of the union are not needed to score drift.
    """
    splits = [s for s in splits if s is not None]
    first = splits[0]
    columns = []
    for j, column in enumerate(first["columns"]):
        counts = np.sum([s["columns"][j]["histogram"]["counts"] for s in splits], axis=0)
        columns.append(
            {
                "name": column["name"],
                "count": int(sum(s["columns"][j]["count"] for s in splits)),
                "histogram": {"edges": column["histogram"]["edges"], "counts": counts.tolist()},
            }
        )
    months: dict[str, int] = {}
    for split in splits:
        for month, rides in split["rides_per_month"].items():
            months[month] = months.get(month, 0) + rides
    return {
        "rows": sum(s["rows"] for s in splits),
        "columns": columns,
        "rides_per_month": dict(sorted(months.items())),
        "rides_per_hour": np.sum([s.get("rides_per_hour", [0] * HOURS) for s in splits], axis=0).tolist(),
    }
