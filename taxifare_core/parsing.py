"""Parsing raw rides (CSV lines, dicts, BigQuery rows, DataFrames) into typed values.

A value that is *missing* (empty, null, NaN) parses to NaN / None: the contract's
cleaning rule "missing value" drops it. A record that cannot be read at all
(wrong field count, text in a numeric field, a number that is not finite such as
`inf` or `1e309`, an unreadable timestamp, an impossible date such as Feb 30, a
time outside what a nanosecond timestamp can hold, an absent column) raises
`MalformedRecord` with the reason: that is bad input, reported, never silently
dropped. docs/bad-input.md lists the reasons.

    >>> parse_csv_line("4.5,2009-06-15 17:26:21 UTC,-73.84,40.72,-73.84,40.71,1",
    ...                RAW_COLUMNS)["passenger_count"]
    1.0
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone

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
# Decimal numbers only: no "inf", no "1_000", no hex, as a CSV reader expects. A passenger
# count is a number whose value is whole ("2", "2.0", "2e0"), judged on the value as Arrow's
# typed read does, so both parse paths agree.
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
# Spellings of infinity that float() and Arrow read: unreadable numbers here, not missing ones.
_INFINITE_TEXT = pa.array(sorted({f"{sign}{word}" for sign in ("", "+", "-") for word in ("inf", "infinity")}))
# Pickup times a datetime64[ns] can hold (pandas' range), in whole epoch seconds.
_MIN_SECONDS = -(-pd.Timestamp.min.value // 1_000_000_000)
_MAX_SECONDS = pd.Timestamp.max.value // 1_000_000_000
_RANGE_TEXT = (f"{pd.Timestamp(_MIN_SECONDS, unit='s'):%Y-%m-%d %H:%M:%S} to "
               f"{pd.Timestamp(_MAX_SECONDS, unit='s'):%Y-%m-%d %H:%M:%S} UTC")
# The CSV form's length and where its day and seconds stand: "2013-07-06 17:18:00 UTC".
_CSV_TIME_LENGTH, _DAY_SLICE, _SECOND_SLICE = 23, (8, 10), (17, 19)
# A date and time as written, to tell an impossible one (Feb 30, 24:00) from an unreadable one.
_DATE_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?")
# A value quoted in a reason is cut to this many characters: a 3 MB field makes a short reason.
MAX_VALUE_CHARS = 60
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


def shown(value) -> str:
    """A value as a reason quotes it: its repr, cut to MAX_VALUE_CHARS characters."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[:MAX_VALUE_CHARS]}... ({len(text):,} characters)"


def not_finite_message(column: str) -> str:
    """The reason for inf, -inf or a number too big for float64 (1e309) in a numeric column."""
    return f"{column}: not a finite number"


def parse_number(column: str, value) -> float:
    """A numeric field as float; NaN when missing; MalformedRecord when not a finite (whole) number."""
    if is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if text.lower().lstrip("+-") in ("inf", "infinity"):
            raise MalformedRecord(not_finite_message(column))
        if not re.match(_NUMBER, text):
            raise MalformedRecord(_number_message(column).format(value=shown(value)))
        number = float(text)
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise MalformedRecord(_number_message(column).format(value=shown(value)))
    else:
        number = float(value)
    if math.isinf(number):
        raise MalformedRecord(not_finite_message(column))
    if column == PASSENGER_COLUMN and number != int(number):
        raise MalformedRecord(_number_message(column).format(value=shown(value)))
    return number


_OUT_OF_RANGE = f"{TIME_COLUMN}: out of range ({_RANGE_TEXT} can be read), got {{value}}"


def out_of_range_message(value) -> str:
    """The reason for a pickup time a nanosecond timestamp cannot hold."""
    return _OUT_OF_RANGE.format(value=shown(value))


def _checked_range(stamp: datetime, value) -> datetime:
    """`stamp` if pandas' nanosecond timestamps can hold it; MalformedRecord otherwise."""
    if not _MIN_SECONDS <= stamp.timestamp() <= _MAX_SECONDS:
        raise MalformedRecord(out_of_range_message(value))
    return stamp


def _impossible_reason(text: str) -> str | None:
    """Why a text that looks like a date and time is not one (Feb 30, 24:00, year 0), else None."""
    match = _DATE_TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    if year == 0:
        return out_of_range_message(text)
    try:
        date(year, month, day)
    except ValueError:
        return f"{TIME_COLUMN}: invalid date {shown(text)}"
    if hour > 23 or minute > 59 or second > 59:
        return f"{TIME_COLUMN}: invalid time {shown(text)}"
    return None


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
            return _checked_range(value.replace(tzinfo=timezone.utc), value)
        return _checked_range(value.astimezone(timezone.utc), value)
    if not isinstance(value, str):
        raise MalformedRecord(f"{TIME_COLUMN}: expected a timestamp, got {shown(value)}")
    text = value.strip()
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _checked_range(parsed.replace(tzinfo=timezone.utc), value)
    try:
        parsed = datetime.fromisoformat(text.replace(" UTC", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        reason = _impossible_reason(text) or f"{TIME_COLUMN}: unreadable timestamp {shown(value)}"
        raise MalformedRecord(reason) from None
    if parsed.tzinfo is None:
        return _checked_range(parsed.replace(tzinfo=timezone.utc), value)
    try:
        return _checked_range(parsed.astimezone(timezone.utc), value)
    except OverflowError:  # an offset that moves year 1 or 9999 past datetime's range
        raise MalformedRecord(out_of_range_message(value)) from None


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
    fields = csv_fields(line)
    if len(fields) != len(columns):
        raise MalformedRecord(f"expected {len(columns)} fields, got {len(fields)}")
    return parse_record(dict(zip(columns, fields)))


def csv_fields(line: str) -> list[str]:
    """One CSV line's fields; MalformedRecord when Python's csv module cannot read it."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as error:
        if "new-line" in str(error):
            raise MalformedRecord("stray carriage return (\\r) in an unquoted field") from None
        raise MalformedRecord(f"unreadable CSV line: {error}") from None


def header_columns(header_line: str, required: Sequence[str] = RAW_COLUMNS) -> list[str]:
    """Column names of a CSV header; MalformedRecord if a `required` column is absent."""
    columns = [name.strip() for name in csv_fields(header_line)]
    absent = [column for column in required if column not in columns]
    if absent:
        raise MalformedRecord(f"CSV header lacks column(s): {', '.join(absent)}")
    return columns


def _number_message(column: str) -> str:
    """The reason template for an unreadable value of a numeric column."""
    kind = "a whole number" if column == PASSENGER_COLUMN else "a number"
    return f"{column}: expected {kind}, got {{value}}"


def _set_reasons(reasons: np.ndarray, bad: np.ndarray, values: pd.Series, message: str) -> None:
    """Write `message` (formatted with the raw value, cut short) for rows that are bad and have no reason yet."""
    rows = np.flatnonzero(bad & (reasons == None))  # noqa: E711 - elementwise on an object array
    for row in rows:
        reasons[row] = message.format(value=shown(values.iloc[row]))


def _text(values: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """A raw column as trimmed Arrow text, and where it is missing."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string(values.dtype.pyarrow_dtype):
        text = pa.array(values)  # Arrow's CSV read handed over as is: no Python strings made
    else:
        text = pa.array(values.astype("string"), type=pa.string())
    text = pc.utf8_trim_whitespace(text)
    missing = pc.or_kleene(pc.is_null(text), pc.is_in(pc.utf8_lower(text), value_set=_MISSING_ARROW))
    return text, missing.to_numpy(zero_copy_only=False).astype(bool)


def _numeric_column(values: pd.Series, column: str, reasons: np.ndarray) -> np.ndarray:
    """Vectorized parse_number: float64 values, NaN when missing; bad rows get a reason."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        _set_reasons(reasons, np.isinf(numbers), values, not_finite_message(column))
    else:
        text, missing = _text(values)
        readable = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
        numbers = pc.cast(pc.if_else(readable, text, None), pa.float64()).to_numpy(zero_copy_only=False)
        numbers = np.where(readable, numbers, np.nan)
        # "inf" and "1e309" alike: the same reason as Arrow's typed read gives them (it reads both as inf).
        infinite = pc.fill_null(pc.is_in(pc.utf8_lower(text), value_set=_INFINITE_TEXT), False)
        infinite = infinite.to_numpy(zero_copy_only=False) | np.isinf(numbers)
        _set_reasons(reasons, infinite, values, not_finite_message(column))
        numbers[infinite] = np.nan
        _set_reasons(reasons, ~missing & ~readable, values, _number_message(column))
    if column == PASSENGER_COLUMN:
        fractional = np.isfinite(numbers) & (numbers != np.floor(numbers))
        _set_reasons(reasons, fractional, values, _number_message(column))
    return numbers


def _as_utc_ns(stamps: np.ndarray) -> pd.Series:
    """Epoch nanoseconds (int64, NaT where missing) as datetime64[ns, UTC]."""
    return pd.Series(stamps.view("datetime64[ns]")).dt.tz_localize("UTC")


def _one_by_one(values, rows, stamps: np.ndarray, reasons: np.ndarray) -> None:
    """parse_timestamp on each listed row: its epoch ns into `stamps`, or its reason into `reasons`."""
    for row in rows:
        try:
            stamps[row] = pd.Timestamp(parse_timestamp(values[row])).value
        except MalformedRecord as error:
            if reasons[row] is None:
                reasons[row] = error.reason


def _typed_times(values: pd.Series, reasons: np.ndarray) -> pd.Series:
    """A datetime64 column (any unit, naive = UTC) as datetime64[ns, UTC]; times out of the
    nanosecond range (pandas keeps year 2300 in microseconds) get a reason and NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = values.to_numpy()
    seconds = stamps.astype("datetime64[s]").view(np.int64)
    outside = ~np.isnat(stamps) & ((seconds < _MIN_SECONDS) | (seconds > _MAX_SECONDS))
    if outside.any():
        _set_reasons(reasons, outside, values, _OUT_OF_RANGE)
        stamps = np.where(outside, np.datetime64("NaT"), stamps)
    return pd.Series(stamps.astype("datetime64[ns]"), index=values.index).dt.tz_localize("UTC")


def _time_column(values: pd.Series, reasons: np.ndarray) -> pd.Series:
    """Vectorized parse_timestamp: datetime64[ns, UTC], NaT when missing; bad rows get a reason.

    Text in the CSV form is read by Arrow into whole seconds (any year fits), then
    kept only when a nanosecond timestamp holds it and its day and seconds are the
    ones written: Arrow's strptime rolls Feb 30 over to March 2 and 23:59:60 to the
    next minute, where the contract wants bad input. Every other text (ISO forms,
    time zones, impossible dates) goes through parse_timestamp one row at a time.
    """
    nat = np.iinfo(np.int64).min
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        return _typed_times(values, reasons)
    if values.dtype == object and len(values) and isinstance(values.iloc[0], datetime):
        stamps = np.full(len(values), nat, dtype=np.int64)
        objects = values.to_numpy(dtype=object)
        _one_by_one(objects, np.flatnonzero(~values.isna().to_numpy()), stamps, reasons)
        return _as_utc_ns(stamps).set_axis(values.index)
    text, missing = _text(values)
    seconds = pc.strptime(text, format=CSV_TIME_FORMAT, unit="s", error_is_null=True)
    in_form = pc.and_(pc.is_valid(seconds), pc.equal(pc.utf8_length(text), _CSV_TIME_LENGTH))
    day_text, second_text = pc.utf8_slice_codeunits(text, *_DAY_SLICE), pc.utf8_slice_codeunits(text, *_SECOND_SLICE)
    in_form = pc.fill_null(pc.and_(in_form, pc.and_(pc.utf8_is_digit(day_text), pc.utf8_is_digit(second_text))),
                           False)
    as_written = pc.and_(
        pc.equal(pc.day(seconds), pc.cast(pc.if_else(in_form, day_text, "0"), pa.int64())),
        pc.equal(pc.second(seconds), pc.cast(pc.if_else(in_form, second_text, "0"), pa.int64())),
    )
    epoch = pc.fill_null(pc.cast(seconds, pa.int64()), 0).to_numpy(zero_copy_only=False)
    good = (pc.fill_null(pc.and_(in_form, as_written), False).to_numpy(zero_copy_only=False)
            & (epoch >= _MIN_SECONDS) & (epoch <= _MAX_SECONDS))
    stamps = np.where(good, epoch * 1_000_000_000, nat)
    # Everything else that is not missing: read (or judged) one row at a time.
    rows = np.flatnonzero(~missing & ~good)
    if len(rows):
        _one_by_one(values.to_numpy(dtype=object), rows, stamps, reasons)
    return _as_utc_ns(stamps).set_axis(values.index)


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


# The dead letter keeps a bad record's text up to this many characters (a 3 MB line is cut, and its reason says so).
MAX_RECORD_CHARS = 10_000


def clip_record(record: str, reason: str) -> tuple[str, str]:
    """A bad record and its reason as the dead letter keeps them: the record cut to MAX_RECORD_CHARS."""
    if len(record) <= MAX_RECORD_CHARS:
        return record, reason
    return record[:MAX_RECORD_CHARS], f"{reason} (record cut to its first {MAX_RECORD_CHARS:,} of {len(record):,} characters)"
