"""Parsing raw rides (CSV lines, dicts, BigQuery rows, DataFrames) into typed values.

A value that is *missing* (empty, null, NaN) parses to NaN / None: the contract's
cleaning rule "missing value" drops it. A record that cannot be read at all
(wrong field count, text in a numeric field, unreadable timestamp, absent
column) raises `MalformedRecord` with the reason: that is bad input, reported,
never silently dropped.

    >>> parse_csv_line("4.5,2009-06-15 17:26:21 UTC,-73.84,40.72,-73.84,40.71,1",
    ...                RAW_COLUMNS)["passenger_count"]
    1.0
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from taxifare_core.contract import (
    CSV_TIME_FORMAT,
    KEY_COLUMN,
    NUMERIC_COLUMNS,
    PASSENGER_COLUMN,
    RAW_COLUMNS,
    TIME_COLUMN,
)

_MISSING_TEXT = frozenset({"", "null", "none", "nan", "na", "n/a"})
_TIME_FORMATS = (
    CSV_TIME_FORMAT,
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f UTC",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
)


class MalformedRecord(ValueError):
    """A raw record that cannot be parsed; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def is_missing(value) -> bool:
    """True for null, NaN and empty / 'null'-like text."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TEXT
    return value is pd.NaT


def parse_number(column: str, value) -> float:
    """A numeric field as float; NaN when missing; MalformedRecord when not a number."""
    if is_missing(value):
        return math.nan
    if isinstance(value, bool):
        raise MalformedRecord(f"{column}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MalformedRecord(f"{column}: expected a number, got {value!r}") from None
    if math.isinf(number):
        raise MalformedRecord(f"{column}: expected a finite number, got {value!r}")
    if column == PASSENGER_COLUMN and not math.isnan(number) and number != int(number):
        raise MalformedRecord(f"{column}: expected a whole number, got {value!r}")
    return number


def parse_timestamp(value) -> datetime | None:
    """A pickup time as an aware UTC datetime; None when missing.

    Accepts datetimes (naive ones are taken as UTC, as BigQuery TIMESTAMPs are)
    and the CSV forms `2013-07-06 17:18:00 UTC`, ISO 8601 with `T`, `Z` or an offset.
    """
    if is_missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if not isinstance(value, str):
        raise MalformedRecord(f"{TIME_COLUMN}: expected a timestamp, got {value!r}")
    text = value.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace(" UTC", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRecord(f"{TIME_COLUMN}: unreadable timestamp {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_record(record: Mapping) -> dict:
    """One ride (dict from CSV or BigQuery) as typed values: floats, a UTC datetime, a key."""
    absent = [column for column in RAW_COLUMNS if column not in record]
    if absent:
        raise MalformedRecord(f"missing column(s): {', '.join(absent)}")
    ride = {column: parse_number(column, record[column]) for column in NUMERIC_COLUMNS}
    ride[TIME_COLUMN] = parse_timestamp(record[TIME_COLUMN])
    key = record.get(KEY_COLUMN)
    ride[KEY_COLUMN] = None if is_missing(key) else str(key)
    return ride


def parse_csv_line(line: str, columns: Sequence[str]) -> dict:
    """One CSV line split by the file's header `columns`, then parsed as a ride."""
    fields = next(csv.reader([line]), [])
    if len(fields) != len(columns):
        raise MalformedRecord(f"expected {len(columns)} fields, got {len(fields)}")
    return parse_record(dict(zip(columns, fields)))


def header_columns(header_line: str) -> list[str]:
    """Column names of a CSV header; MalformedRecord if a contract column is absent."""
    columns = [name.strip() for name in next(csv.reader([header_line]), [])]
    absent = [column for column in RAW_COLUMNS if column not in columns]
    if absent:
        raise MalformedRecord(f"CSV header lacks column(s): {', '.join(absent)}")
    return columns


def _numeric_column(values: pd.Series, column: str) -> tuple[np.ndarray, pd.Series]:
    """Vectorized parse_number: (float64 values, per-row reason or None)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        reasons = pd.Series(None, index=values.index, dtype=object)
    else:
        text = values.astype("string").str.strip()
        missing = text.isna() | text.str.lower().isin(_MISSING_TEXT)
        numbers = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        unreadable = (~missing & np.isnan(numbers)).to_numpy(dtype=bool)
        reasons = pd.Series(None, index=values.index, dtype=object)
        if unreadable.any():
            reasons[unreadable] = [
                f"{column}: expected a number, got {v!r}" for v in values[unreadable]
            ]
    bad = np.isinf(numbers)
    if column == PASSENGER_COLUMN:
        bad |= np.isfinite(numbers) & (numbers != np.floor(numbers))
    if bad.any():
        word = "a whole number" if column == PASSENGER_COLUMN else "a finite number"
        reasons[bad & reasons.isna().to_numpy()] = [
            f"{column}: expected {word}, got {v!r}" for v in values[bad & reasons.isna().to_numpy()]
        ]
    return numbers, reasons


def _time_column(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Vectorized parse_timestamp: (datetime64[ns, UTC] Series, NaT when missing; per-row reason)."""
    reasons = pd.Series(None, index=values.index, dtype=object)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("ns"), reasons
    if pd.api.types.is_datetime64_dtype(values):
        return values.dt.tz_localize("UTC").dt.as_unit("ns"), reasons
    if values.dtype == object and len(values) and isinstance(values.iloc[0], datetime):
        values = values.map(parse_timestamp, na_action="ignore")
        return pd.to_datetime(values, utc=True).dt.as_unit("ns"), reasons
    text = values.astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(_MISSING_TEXT)
    stamps = pd.to_datetime(text, format=CSV_TIME_FORMAT, errors="coerce", utc=True)
    stamps = stamps.dt.as_unit("ns")
    # Rows not in the common CSV form go through the per-record parser.
    for position in np.flatnonzero((~missing & stamps.isna()).to_numpy(dtype=bool)):
        try:
            stamps.iloc[position] = pd.Timestamp(parse_timestamp(text.iloc[position]))
        except MalformedRecord as error:
            reasons.iloc[position] = error.reason
    return stamps, reasons


def parse_frame(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Vectorized parse of a DataFrame of raw rides (text or typed columns).

    Returns the typed rides (numeric columns float64, `pickup_datetime`
    datetime64[ns, UTC] with NaT when missing) and, for every row that is bad
    input, its reason (a Series indexed like `raw`, None for good rows).
    """
    absent = [column for column in RAW_COLUMNS if column not in raw.columns]
    if absent:
        raise MalformedRecord(f"missing column(s): {', '.join(absent)}")
    typed = {}
    reasons = pd.Series(None, index=raw.index, dtype=object)
    for column in NUMERIC_COLUMNS:
        typed[column], column_reasons = _numeric_column(raw[column], column)
        reasons = reasons.fillna(column_reasons) if column_reasons.notna().any() else reasons
    typed[TIME_COLUMN], time_reasons = _time_column(raw[TIME_COLUMN])
    if time_reasons.notna().any():
        reasons = reasons.fillna(time_reasons)
    if KEY_COLUMN in raw.columns:
        typed[KEY_COLUMN] = raw[KEY_COLUMN].astype("string").to_numpy(dtype=object, na_value=None)
    frame = pd.DataFrame(typed, index=raw.index)
    return frame, reasons
