"""Rides as the web service receives them: New York local times, one ride fast, a JSON list vectorized.

The course's front-ends send `pickup_datetime` without a zone, meaning New York
wall-clock time; the raw data's form ends in " UTC". `pickup_to_utc` turns
either into the contract's UTC text, then the contract's own parse, rules and
features run unchanged (they convert UTC back to New York for hour, weekday
and month, so a local 2014-07-06 19:18:00 gets hour 19).

Two ways in, tested to agree with `serving.prepare_rides` (the path of
`pipelines.predict.predict()` and batch prediction):

    features, reason = prepare_ride({"pickup_datetime": "2014-07-06 19:18:00", ...})  # one ride
    prepared = prepare_json_rides([{...}, {...}])     # a JSON list, through serving.prepare_rides

`prepare_ride` walks the per-record functions (`parse_record`, `check_ride`,
`encode_ride`), because `prepare_rides` spends milliseconds of pandas overhead
on one ride, over a hundred times more (docs/serving.md has the timings), while
a GET is meant to take well under 3 ms in all.

Daylight saving: a local time in the spring-forward gap (e.g. 2014-03-09
02:30, which New York clocks skip) is read with the offset in force before the
change (EST, so 07:30 UTC, i.e. 03:30 EDT); a time in the fall-back hour that
happens twice (e.g. 2014-11-02 01:30) is taken as its first occurrence (EDT, so
05:30 UTC). This is Python's `fold=0` rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxifare_core import contract
from taxifare_core.cleaning import check_ride
from taxifare_core.contract import RULE_MISSING
from taxifare_core.features import encode_ride
from taxifare_core.parsing import (
    MalformedRecord,
    is_missing,
    out_of_range_message,
    parse_number,
    parse_record,
    parse_timestamp,
)
from taxifare_core.serving import (
    PLACEHOLDER_FARE,
    RULE_MESSAGES,
    SERVING_COLUMNS,
    PreparedRides,
    prepare_rides,
)

_NEW_YORK_NAME = contract.LOCAL_TIMEZONE
_NEW_YORK = ZoneInfo(_NEW_YORK_NAME)
_UTC_SUFFIX = " utc"
# The span pandas can hold in nanoseconds (1677-09-21 to 2262-04-11), whole days inside it:
# the vectorized path stores times as datetime64[ns].
FIRST_TIME = datetime(1677, 9, 22, tzinfo=UTC)
LAST_TIME = datetime(2262, 4, 10, 23, 59, 59, tzinfo=UTC)
# The zone-less forms the contract's parser reads (parsing.parse_timestamp), tried before ISO 8601.
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f")
# The common form, parsed by Arrow for a whole JSON list at once.
_FAST_FORMAT = _NAIVE_FORMATS[0]
# Local times Arrow parses that stay inside FIRST_TIME..LAST_TIME once in UTC (a day of margin), in epoch seconds.
_FAST_FIRST = (FIRST_TIME - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() + 86_400
_FAST_LAST = (LAST_TIME - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() - 86_400
_FIELDS = frozenset(SERVING_COLUMNS)
_JSON_SCALARS = frozenset((int, float, str, type(None)))
NOT_AN_OBJECT = "expected a JSON object with the fields " + ", ".join(SERVING_COLUMNS)


def pickup_to_utc(value):
    """A request's pickup time as the contract's UTC text ("2014-07-06 23:18:00 UTC").

    No zone: New York local time (daylight saving included, see the module doc);
    " UTC" at the end: UTC; an ISO offset or "Z": that offset. A missing value
    is returned as is (the contract's rules call it missing) and so is text that
    is not a time (the contract's parser then gives the reason). Raises
    MalformedRecord for a time outside FIRST_TIME..LAST_TIME or a non-text value.
    """
    if is_missing(value):
        return value
    if not isinstance(value, str):
        parse_timestamp(value)  # raises with the contract's words ("expected a timestamp, got 5")
        raise MalformedRecord(f"{contract.TIME_COLUMN}: expected a timestamp text, got {value!r}")
    text = value.strip()
    is_utc = text.lower().endswith(_UTC_SUFFIX)
    stamp = _read_time(text[: -len(_UTC_SUFFIX)] if is_utc else text) if text.isascii() else None
    if stamp is None or (is_utc and stamp.tzinfo is not None):
        return value  # not a time (non-ASCII digits included), or two zones: the contract's parser words the refusal
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC if is_utc else _NEW_YORK)
    try:
        utc = stamp.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_TIME <= utc <= LAST_TIME:
        raise MalformedRecord(out_of_range_message(value))
    return f"{utc:%Y-%m-%d %H:%M:%S.%f UTC}" if utc.microsecond else f"{utc:%Y-%m-%d %H:%M:%S UTC}"


def _read_time(text: str) -> datetime | None:
    """A time text as a datetime (naive unless it has an offset), None when it is not one."""
    for fmt in _NAIVE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text)  # "T", "Z", offsets, minutes only...
    except ValueError:
        return None


def prepare_ride(fields: Mapping) -> tuple[np.ndarray | None, str | None]:
    """One ride's (1, 65) float32 features, or (None, the reason it cannot be priced).

    Same reasons, in the same precedence, as `serving.prepare_rides`: unreadable
    values (numbers first, then the time), then the contract's rules.
    """
    record = {**fields, contract.LABEL_COLUMN: PLACEHOLDER_FARE}
    time_reason = None
    if contract.TIME_COLUMN in record:
        try:
            record[contract.TIME_COLUMN] = pickup_to_utc(record[contract.TIME_COLUMN])
        except MalformedRecord as error:
            time_reason, record[contract.TIME_COLUMN] = error.reason, None
    try:
        ride = parse_record(record)
    except MalformedRecord as error:
        return None, error.reason
    if time_reason is not None:
        return None, time_reason
    rule = check_ride(ride)
    if rule is not None:
        return None, RULE_MESSAGES[rule]
    return encode_ride(ride)[np.newaxis, :], None


def prepare_json_rides(rides: Sequence) -> PreparedRides:
    """A JSON list of rides (POST /predict) through `serving.prepare_rides`, with a reason for every refused ride.

    Rides that are not objects or lack a field are refused here (with
    `parse_record`'s words) and go to the frame blank. Values a DataFrame
    column cannot carry (true, a list...) and times out of range also go blank;
    their reason replaces the frame's "a value is missing" (an unreadable number
    in another field is named first, as in `prepare_ride`). Times are converted
    from New York (or " UTC") for the whole list at once by Arrow and pandas,
    the odd forms ride by ride through `pickup_to_utc`.
    """
    whole = [ride if type(ride) is dict and _FIELDS <= ride.keys() else None for ride in rides]
    early: dict[int, str] = {}
    for index in (i for i, ride in enumerate(whole) if ride is None):
        ride = rides[index]
        if not isinstance(ride, dict):
            early[index] = NOT_AN_OBJECT
            continue
        try:
            parse_record({**ride, contract.LABEL_COLUMN: PLACEHOLDER_FARE})
        except MalformedRecord as error:  # "missing column(s): ..."
            early[index] = error.reason
    late: dict[int, str] = {}
    columns = {}
    for column in SERVING_COLUMNS:
        values = [ride[column] if ride is not None else None for ride in whole]
        if column == contract.TIME_COLUMN:
            columns[column] = _utc_times(values, late)
            continue
        odd = (
            []
            if set(map(type, values)) <= _JSON_SCALARS
            else [i for i, value in enumerate(values) if type(value) not in _JSON_SCALARS]
        )
        for index in odd:
            try:
                parse_number(column, values[index])
            except MalformedRecord as error:
                late.setdefault(index, error.reason)  # columns in contract order: the first one's reason wins
            values[index] = None
        columns[column] = values
    prepared = prepare_rides(pd.DataFrame(columns))
    missing = RULE_MESSAGES[RULE_MISSING]
    reasons = list(prepared.reasons)
    for index, reason in late.items():
        if reasons[index] == missing:
            reasons[index] = reason
    for index, reason in early.items():
        reasons[index] = reason
    return PreparedRides(prepared.features, prepared.valid, reasons)


def _utc_times(values: list, reasons: dict[int, str]) -> pd.Series:
    """Request times as datetime64[ns, UTC] (NaT when missing or refused, the reason in `reasons`).

    The common form ("2014-07-06 19:18:00", New York) is parsed by Arrow and
    localized by pandas (gap hour shifted by one hour and first occurrence of
    the repeated hour: the same instants as Python's fold=0 in `pickup_to_utc`);
    every other value goes through `pickup_to_utc` and the contract's parser.
    """
    text = pc.utf8_trim_whitespace(pa.array([v if type(v) is str else None for v in values], type=pa.string()))
    local = pc.strptime(text, format=_FAST_FORMAT, unit="s", error_is_null=True)
    # Arrow rolls "2014-02-30" over to March and reads unpadded fields: only exact round trips take the fast path.
    local = pc.if_else(pc.equal(pc.strftime(local, format=_FAST_FORMAT), text), local, None)
    seconds = local.cast(pa.int64()).to_numpy(zero_copy_only=False)
    seconds = np.nan_to_num(np.asarray(seconds, dtype=np.float64), nan=-np.inf)
    fast = (seconds >= _FAST_FIRST) & (seconds <= _FAST_LAST)
    utc_ns = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if fast.any():
        stamps = pd.DatetimeIndex(seconds[fast].astype(np.int64).astype("datetime64[s]")).tz_localize(
            _NEW_YORK_NAME, ambiguous=np.ones(int(fast.sum()), dtype=bool), nonexistent=pd.Timedelta(hours=1)
        )
        utc_ns[fast] = stamps.tz_convert("UTC").as_unit("ns").asi8
    for index in np.flatnonzero(~fast).tolist():
        value = values[index]
        if is_missing(value):
            continue
        try:
            utc = parse_timestamp(pickup_to_utc(value))
        except MalformedRecord as error:
            reasons.setdefault(index, error.reason)
            continue
        if utc is None or not FIRST_TIME <= utc <= LAST_TIME:
            reasons.setdefault(index, out_of_range_message(value))
            continue
        utc_ns[index] = pd.Timestamp(utc).as_unit("ns").value
    return pd.Series(pd.DatetimeIndex(utc_ns.view("datetime64[ns]")).tz_localize("UTC"))
