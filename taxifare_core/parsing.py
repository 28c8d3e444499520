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
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxifare_core.contract import (
    CSV_TIME_FORMAT,
    KEY_COLUMN,
    NUMERIC_COLUMNS,
    PASSENGER_COLUMN,
    RAW_COLUMNS,
    TIME_COLUMN,
)

# Text that means "no value", compared in lower case after trimming.
MISSING_TEXT = frozenset({"", "null", "none", "nan", "na", "n/a"})
_MISSING_ARROW = pa.array(sorted(MISSING_TEXT))
# Finite decimal numbers only: no "inf", no "1_000", no hex, as a CSV reader expects.
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_WHOLE_NUMBER = r"^[-+]?\d+(\.0*)?$"
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
        return value.strip().lower() in MISSING_TEXT
    return value is pd.NaT


def parse_number(column: str, value) -> float:
    """A numeric field as float; NaN when missing; MalformedRecord when not a (whole) number."""
    if is_missing(value):
        return math.nan
    if isinstance(value, str):
        pattern = _WHOLE_NUMBER if column == PASSENGER_COLUMN else _NUMBER
        if not re.match(pattern, value.strip()):
            raise MalformedRecord(_number_message(column).format(value=value))
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or math.isinf(value):
        raise MalformedRecord(_number_message(column).format(value=value))
    if column == PASSENGER_COLUMN and value != int(value):
        raise MalformedRecord(_number_message(column).format(value=value))
    return float(value)


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


def header_columns(header_line: str, required: Sequence[str] = RAW_COLUMNS) -> list[str]:
    """Column names of a CSV header; MalformedRecord if a `required` column is absent."""
    columns = [name.strip() for name in next(csv.reader([header_line]), [])]
    absent = [column for column in required if column not in columns]
    if absent:
        raise MalformedRecord(f"CSV header lacks column(s): {', '.join(absent)}")
    return columns


def _number_message(column: str) -> str:
    """The reason template for an unreadable value of a numeric column."""
    kind = "a whole number" if column == PASSENGER_COLUMN else "a number"
    return f"{column}: expected {kind}, got {{value!r}}"


def _set_reasons(reasons: np.ndarray, bad: np.ndarray, values: pd.Series, message: str) -> None:
    """Write `message` (formatted with the raw value) for rows that are bad and have no reason yet."""
    rows = np.flatnonzero(bad & (reasons == None))  # noqa: E711 - elementwise on an object array
    for row in rows:
        value = values.iloc[row]
        # numpy scalars as plain Python numbers, so the reason reads 'inf', not 'np.float64(inf)'.
        reasons[row] = message.format(value=value.item() if isinstance(value, np.generic) else value)


def _text(values: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """A raw column as trimmed Arrow text, and where it is missing."""
    text = pc.utf8_trim_whitespace(pa.array(values.astype("string"), type=pa.string()))
    missing = pc.or_kleene(pc.is_null(text), pc.is_in(pc.utf8_lower(text), value_set=_MISSING_ARROW))
    return text, missing.to_numpy(zero_copy_only=False).astype(bool)


def _numeric_column(values: pd.Series, column: str, reasons: np.ndarray) -> np.ndarray:
    """Vectorized parse_number: float64 values, NaN when missing; bad rows get a reason."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        _set_reasons(reasons, np.isinf(numbers), values, f"{column}: expected a number, got {{value!r}}")
    else:
        text, missing = _text(values)
        pattern = _WHOLE_NUMBER if column == PASSENGER_COLUMN else _NUMBER
        readable = pc.fill_null(pc.match_substring_regex(text, pattern), False).to_numpy(zero_copy_only=False)
        numbers = pc.cast(pc.if_else(readable, text, None), pa.float64()).to_numpy(zero_copy_only=False)
        numbers = np.where(readable, numbers, np.nan)
        _set_reasons(reasons, ~missing & ~readable, values, _number_message(column))
    if column == PASSENGER_COLUMN:
        fractional = np.isfinite(numbers) & (numbers != np.floor(numbers))
        _set_reasons(reasons, fractional, values, _number_message(column))
    return numbers


def _time_column(values: pd.Series, reasons: np.ndarray) -> pd.Series:
    """Vectorized parse_timestamp: datetime64[ns, UTC], NaT when missing; bad rows get a reason."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("ns")
    if pd.api.types.is_datetime64_dtype(values):
        return values.dt.tz_localize("UTC").dt.as_unit("ns")
    if values.dtype == object and len(values) and isinstance(values.iloc[0], datetime):
        return pd.to_datetime(values.map(parse_timestamp, na_action="ignore"), utc=True).dt.as_unit("ns")
    text, missing = _text(values)
    parsed = pc.strptime(text, format=CSV_TIME_FORMAT, unit="ns", error_is_null=True)
    stamps = pd.Series(parsed.to_numpy(zero_copy_only=False), index=values.index).dt.tz_localize("UTC")
    # Rows not in the common CSV form go through the per-record parser.
    for row in np.flatnonzero(~missing & stamps.isna().to_numpy()):
        try:
            stamps.iloc[row] = pd.Timestamp(parse_timestamp(text[row].as_py()))
        except MalformedRecord as error:
            if reasons[row] is None:
                reasons[row] = error.reason
    return stamps


def parse_frame(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Vectorized parse of a DataFrame of raw rides (text or typed columns).

    Returns the typed rides (numeric columns float64, `pickup_datetime`
    datetime64[ns, UTC] with NaT when missing) and, for every row that is bad
    input, its reason (a Series indexed like `raw`, None for good rows). The
    first bad column in contract order gives the reason, as in `parse_record`.
    """
    absent = [column for column in RAW_COLUMNS if column not in raw.columns]
    if absent:
        raise MalformedRecord(f"missing column(s): {', '.join(absent)}")
    reasons = np.full(len(raw), None, dtype=object)
    typed = {column: _numeric_column(raw[column], column, reasons) for column in NUMERIC_COLUMNS}
    typed[TIME_COLUMN] = _time_column(raw[TIME_COLUMN], reasons)
    if KEY_COLUMN in raw.columns:
        typed[KEY_COLUMN] = raw[KEY_COLUMN].astype("string").to_numpy(dtype=object, na_value=None)
    return pd.DataFrame(typed, index=raw.index), pd.Series(reasons, index=raw.index, dtype=object)
