"""The contract's cleaning rules (CONTRACT.md section 2), vectorized and per record.

kept, reasons = clean(typed_rides)          # reasons: dropped row -> rule
check_ride(parse_record(one_dict))          # None, or the first failed rule
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from taxifare_core.contract import (
    COORDINATE_COLUMNS,
    FARE_MAX_EXCLUSIVE,
    FARE_MIN_EXCLUSIVE,
    LABEL_COLUMN,
    LATITUDE_MAX,
    LATITUDE_MIN,
    LONGITUDE_MAX,
    LONGITUDE_MIN,
    PASSENGER_COLUMN,
    PASSENGER_MAX_EXCLUSIVE,
    PASSENGER_MIN_EXCLUSIVE,
    RAW_COLUMNS,
    ROW_RULES,
    RULE_DUPLICATE,
    RULE_FARE,
    RULE_LATITUDE,
    RULE_LONGITUDE,
    RULE_MISSING,
    RULE_PASSENGER_COUNT,
    RULE_ZERO_COORDINATES,
    TIME_COLUMN,
)

LATITUDE_COLUMNS = ("pickup_latitude", "dropoff_latitude")
LONGITUDE_COLUMNS = ("pickup_longitude", "dropoff_longitude")


class CleaningResult(NamedTuple):
    """Rows kept, and the rule that dropped each other row (indexed like the input)."""

    kept: pd.DataFrame
    dropped: pd.Series


def rule_failures(rides: pd.DataFrame) -> dict[str, np.ndarray]:
    """For each per-row rule, a boolean array: True where the row fails it."""
    value = {column: rides[column].to_numpy(dtype=np.float64) for column in RAW_COLUMNS if column != TIME_COLUMN}
    missing = rides[TIME_COLUMN].isna().to_numpy()
    for column in value:
        missing = missing | np.isnan(value[column])
    # NaN compares False everywhere, so the range tests are written as
    # "not inside", which also fails NaN (already reported as missing).
    passengers, fare = value[PASSENGER_COLUMN], value[LABEL_COLUMN]
    return {
        RULE_MISSING: missing,
        RULE_ZERO_COORDINATES: np.logical_and.reduce([value[c] == 0 for c in COORDINATE_COLUMNS]),
        RULE_PASSENGER_COUNT: ~((passengers > PASSENGER_MIN_EXCLUSIVE) & (passengers < PASSENGER_MAX_EXCLUSIVE)),
        RULE_FARE: ~((fare > FARE_MIN_EXCLUSIVE) & (fare < FARE_MAX_EXCLUSIVE)),
        RULE_LATITUDE: ~np.logical_and.reduce(
            [(value[c] >= LATITUDE_MIN) & (value[c] <= LATITUDE_MAX) for c in LATITUDE_COLUMNS]
        ),
        RULE_LONGITUDE: ~np.logical_and.reduce(
            [(value[c] >= LONGITUDE_MIN) & (value[c] <= LONGITUDE_MAX) for c in LONGITUDE_COLUMNS]
        ),
    }


def first_failed_rule(rides: pd.DataFrame) -> np.ndarray:
    """Per row, the first per-row rule it fails (contract order), or None if it passes."""
    failures = rule_failures(rides)
    reasons = np.full(len(rides), None, dtype=object)
    # Walk the rules backwards so the earliest failing rule is written last.
    for rule in reversed(ROW_RULES):
        reasons[failures[rule]] = rule
    return reasons


def duplicate_mask(rides: pd.DataFrame) -> np.ndarray:
    """True for every repeat of an earlier row with the same seven columns (`key` ignored)."""
    return rides.duplicated(subset=list(RAW_COLUMNS), keep="first").to_numpy()


def clean(rides: pd.DataFrame, dedupe: bool = True) -> CleaningResult:
    """Apply every rule; duplicates are judged among rows that pass the per-row rules.

    Dropping exact duplicates commutes with the per-row rules (equal rows pass or
    fail together), so checking them last gives the contract's rows while the
    per-row reason of a dirty duplicate stays its real defect.
    """
    reasons = first_failed_rule(rides)
    passing = reasons == None  # noqa: E711 - elementwise comparison on an object array
    if dedupe:
        candidates = rides[passing]
        repeats = duplicate_mask(candidates)
        reasons[np.flatnonzero(passing)[repeats]] = RULE_DUPLICATE
    dropped_mask = reasons != None  # noqa: E711
    return CleaningResult(
        kept=rides[~dropped_mask],
        dropped=pd.Series(reasons[dropped_mask], index=rides.index[dropped_mask], dtype=object),
    )


def check_ride(ride: dict) -> str | None:
    """The first per-row rule one parsed ride fails, or None when it is clean."""
    numbers = [ride[column] for column in RAW_COLUMNS if column != TIME_COLUMN]
    if ride[TIME_COLUMN] is None or any(math.isnan(v) for v in numbers):
        return RULE_MISSING
    if all(ride[c] == 0 for c in COORDINATE_COLUMNS):
        return RULE_ZERO_COORDINATES
    if not PASSENGER_MIN_EXCLUSIVE < ride[PASSENGER_COLUMN] < PASSENGER_MAX_EXCLUSIVE:
        return RULE_PASSENGER_COUNT
    if not FARE_MIN_EXCLUSIVE < ride[LABEL_COLUMN] < FARE_MAX_EXCLUSIVE:
        return RULE_FARE
    if not all(LATITUDE_MIN <= ride[c] <= LATITUDE_MAX for c in LATITUDE_COLUMNS):
        return RULE_LATITUDE
    if not all(LONGITUDE_MIN <= ride[c] <= LONGITUDE_MAX for c in LONGITUDE_COLUMNS):
        return RULE_LONGITUDE
    return None
