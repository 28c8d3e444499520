"""Parsing raw rides (CSV lines, dicts, BigQuery rows, DataFrames) into typed values.

A value that is *missing* (empty, null, NaN) parses to NaN / None: the contract's
cleaning rule "missing value" drops it. A record that cannot be read at all
(wrong field count, text in a numeric field, a number that is not finite such as
`inf` or `1e309`, an unreadable timestamp, an impossible date such as Feb 30, a
time outside what a nanosecond timestamp can hold, an absent column) raises
`MalformedRecord` with the reason: that is bad input, reported, never silently
dropped. docs/bad-input.md lists the reasons.

    >>> parse_record(dict(zip(RAW_COLUMNS, csv_fields(
    ...     "4.5,2009-06-15 17:26:21 UTC,-73.84,40.72,-73.84,40.71,1"))))["passenger_count"]
    1.0
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

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
# typed read does, so both parse paths agree. ASCII digits only: Python's \d and float() also
# read "٣" or "３" as 3, Arrow's regex does not; every path (CLI, CSV, GET, POST) refuses them.
_NUMBER = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
# Spellings of infinity that float() and Arrow read: unreadable numbers here, not missing ones.
_INFINITE_TEXT = pa.array(sorted({f"{sign}{word}" for sign in ("", "+", "-") for word in ("inf", "infinity")}))
# Pickup times a datetime64[ns] can hold (pandas' range), in whole epoch seconds.
_MIN_SECONDS = -(-pd.Timestamp.min.value // 1_000_000_000)
_MAX_SECONDS = pd.Timestamp.max.value // 1_000_000_000
_RANGE_TEXT = (
    f"{pd.Timestamp(_MIN_SECONDS, unit='s'):%Y-%m-%d %H:%M:%S} to "
    f"{pd.Timestamp(_MAX_SECONDS, unit='s'):%Y-%m-%d %H:%M:%S} UTC"
)
# The CSV form byte by byte, "2013-07-06 17:18:00 UTC": where its digits stand and what the other bytes are.
_CSV_TIME_LENGTH = 23
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_FIXED = np.array([4, 7, 10, 13, 16, 19, 20, 21, 22])
_FIXED_BYTES = np.frombuffer(b"--  ::" + b" UTC", dtype=np.uint8)[[0, 1, 2, 4, 5, 6, 7, 8, 9]]
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
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
            return _checked_range(value.replace(tzinfo=UTC), value)
        return _checked_range(value.astimezone(UTC), value)
    if not isinstance(value, str):
        raise MalformedRecord(f"{TIME_COLUMN}: expected a timestamp, got {shown(value)}")
    text = value.strip()
    if not text.isascii():  # strptime reads "٢٠١٤" as 2014, Arrow does not: one rule, ASCII digits
        raise MalformedRecord(f"{TIME_COLUMN}: unreadable timestamp {shown(value)}")
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _checked_range(parsed.replace(tzinfo=UTC), value)
    try:
        parsed = datetime.fromisoformat(text.replace(" UTC", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        reason = _impossible_reason(text) or f"{TIME_COLUMN}: unreadable timestamp {shown(value)}"
        raise MalformedRecord(reason) from None
    if parsed.tzinfo is None:
        return _checked_range(parsed.replace(tzinfo=UTC), value)
    try:
        return _checked_range(parsed.astimezone(UTC), value)
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
    text = pc.utf8_trim_whitespace(_arrow_text(values))
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


def _arrow_text(values: pd.Series) -> pa.Array:
    """A text column as one Arrow string array, untrimmed (Arrow's own when it came from Arrow)."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string(values.dtype.pyarrow_dtype):
        text = pa.array(values)
    else:
        text = pa.array(values.astype("string"), type=pa.string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _csv_form_seconds(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of the texts written exactly in the CSV form, and which those are.

    numpy reads the digits straight from Arrow's buffer and checks every field (a real
    day of that month, hours to 23, seconds to 59), then counts days as the proleptic
    Gregorian calendar does (H. Hinnant's days_from_civil): no per-row Python, no
    roll-over of Feb 30 into March as strptime does.
    """
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32, count=n + 1, offset=text.offset * 4)
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if text.buffers()[2] is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    in_form = lengths == _CSV_TIME_LENGTH
    if text.null_count:
        in_form &= text.is_valid().to_numpy(zero_copy_only=False)
    if in_form.all() and n:
        chars = data[offsets[0] : offsets[-1]].reshape(n, _CSV_TIME_LENGTH)
    else:
        # A 23-byte window at every byte (a view, no copy), then the windows at the rows' starts.
        padded = np.concatenate([data, np.zeros(_CSV_TIME_LENGTH, dtype=np.uint8)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, _CSV_TIME_LENGTH)
        chars = windows[np.where(in_form, offsets[:-1], len(data))]
    in_form &= (chars[:, _FIXED] == _FIXED_BYTES).all(axis=1)
    digits = chars[:, _DIGITS].astype(np.int64) - 48
    in_form &= ((digits >= 0) & (digits <= 9)).all(axis=1)
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month, day = digits[:, 4] * 10 + digits[:, 5], digits[:, 6] * 10 + digits[:, 7]
    hour, minute, second = (
        digits[:, 8] * 10 + digits[:, 9],
        digits[:, 10] * 10 + digits[:, 11],
        digits[:, 12] * 10 + digits[:, 13],
    )
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
    in_form &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    in_form &= (hour <= 23) & (minute <= 59) & (second <= 59)
    shifted = year - (month <= 2)
    era = np.floor_divide(shifted, 400)
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468
    return days * 86_400 + hour * 3_600 + minute * 60 + second, in_form


def _time_column(values: pd.Series, reasons: np.ndarray) -> pd.Series:
    """Vectorized parse_timestamp: datetime64[ns, UTC], NaT when missing; bad rows get a reason.

    Text exactly in the CSV form with a real date and time that a nanosecond
    timestamp holds is read with numpy (`_csv_form_seconds`); every other text
    (missing words, ISO forms, time zones, Feb 30, year 2300) goes through
    parse_timestamp one row at a time, which reads it or gives the reason.
    """
    nat = np.iinfo(np.int64).min
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        return _typed_times(values, reasons)
    if values.dtype == object and len(values) and isinstance(values.iloc[0], datetime):
        stamps = np.full(len(values), nat, dtype=np.int64)
        objects = values.to_numpy(dtype=object)
        _one_by_one(objects, np.flatnonzero(~values.isna().to_numpy()), stamps, reasons)
        return _as_utc_ns(stamps).set_axis(values.index)
    epoch, good = _csv_form_seconds(_arrow_text(values))
    good &= (epoch >= _MIN_SECONDS) & (epoch <= _MAX_SECONDS)
    stamps = np.where(good, epoch * 1_000_000_000, nat)
    if not good.all():
        # Everything else that is not missing: read (or judged) one row at a time.
        _, missing = _text(values)
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
    return record[
        :MAX_RECORD_CHARS
    ], f"{reason} (record cut to its first {MAX_RECORD_CHARS:,} of {len(record):,} characters)"
