"""Rides as the web service receives them: New York local times, one ride fast, a JSON list vectorized.

The course's front-ends send `pickup_datetime` without a zone, meaning New York
wall-clock time; the raw data's form ends in " UTC". `pickup_to_utc` turns
either into the contract's UTC text, then the contract's own parse, rules and
features run unchanged (they convert UTC back to New York for hour, weekday
and month, so a local 2014-07-06 19:18:00 gets hour 19).

Two ways in, tested to agree with `serving.prepare_rides` (the path of
`pipelines.predict.predict()` and batch prediction):

    >>> features, reason = prepare_ride({"pickup_datetime": "2014-07-06 19:18:00", ...})  # one ride, ~15 us
    >>> prepared = prepare_json_rides([{...}, {...}])     # a JSON list, through serving.prepare_rides

`prepare_ride` walks the per-record functions (`parse_record`, `check_ride`,
`encode_ride`), because `prepare_rides` costs about 1.7 ms for one ride in
pandas overhead while a GET is meant to take well under 3 ms in all.

Daylight saving: a local time in the spring-forward gap (e.g. 2014-03-09
02:30, which New York clocks skip) is read with the offset in force before the
change (EST, so 07:30 UTC, i.e. 03:30 EDT); a time in the fall-back hour that
happens twice (e.g. 2014-11-02 01:30) is taken as its first occurrence (EDT, so
05:30 UTC). This is Python's `fold=0` rule.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from taxifare_core import contract
from taxifare_core.cleaning import check_ride
from taxifare_core.contract import RULE_MISSING
from taxifare_core.features import encode_ride
from taxifare_core.parsing import MalformedRecord, is_missing, parse_number, parse_record, parse_timestamp
from taxifare_core.serving import _PLACEHOLDER_FARE, RULE_MESSAGES, SERVING_COLUMNS, PreparedRides, prepare_rides

_NEW_YORK = ZoneInfo(contract.LOCAL_TIMEZONE)
_UTC_SUFFIX = " utc"
# The span pandas can hold in nanoseconds (1677-09-21 to 2262-04-11), whole days inside it:
# the vectorized path stores times as datetime64[ns].
FIRST_TIME = datetime(1677, 9, 22, tzinfo=timezone.utc)
LAST_TIME = datetime(2262, 4, 10, 23, 59, 59, tzinfo=timezone.utc)
NOT_AN_OBJECT = "expected a JSON object with the fields " + ", ".join(SERVING_COLUMNS)


def pickup_to_utc(value):
    """A request's pickup time as the contract's UTC text ("2014-07-06 23:18:00 UTC").

    No zone: New York local time (daylight saving included, see the module doc);
    " UTC" at the end: UTC; an ISO offset or "Z": that offset. A missing value
    is returned as is (the contract's rules call it missing) and so is text that
    is not an ISO time (the contract's parser then gives the reason). Raises
    MalformedRecord for a time outside FIRST_TIME..LAST_TIME or a non-text value.
    """
    if is_missing(value):
        return value
    if not isinstance(value, str):
        parse_timestamp(value)  # raises with the contract's words ("expected a timestamp")
        raise MalformedRecord(f"{contract.TIME_COLUMN}: expected a timestamp text, got {value!r}")
    text = value.strip()
    is_utc = text.lower().endswith(_UTC_SUFFIX)
    try:
        stamp = datetime.fromisoformat(text[: -len(_UTC_SUFFIX)] if is_utc else text)
    except ValueError:
        return value
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc if is_utc else _NEW_YORK)
    elif is_utc:
        return value  # "...+02:00 UTC": two zones; the contract's parser words the refusal
    try:
        utc = stamp.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_TIME <= utc <= LAST_TIME:
        raise MalformedRecord(
            f"{contract.TIME_COLUMN}: {value!r} is out of range "
            f"({FIRST_TIME:%Y-%m-%d} to {LAST_TIME:%Y-%m-%d} UTC)"
        )
    return f"{utc:%Y-%m-%d %H:%M:%S.%f UTC}" if utc.microsecond else f"{utc:%Y-%m-%d %H:%M:%S UTC}"


def prepare_ride(fields: Mapping) -> tuple[np.ndarray | None, str | None]:
    """One ride's (1, 65) float32 features, or (None, the reason it cannot be priced).

    Same reasons, in the same precedence, as `serving.prepare_rides`: unreadable
    values (numbers first, then the time), then the contract's rules.
    """
    record = {**fields, contract.LABEL_COLUMN: _PLACEHOLDER_FARE}
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
    """A JSON list of rides (POST /predict) through `serving.prepare_rides`, with reasons for every ride.

    What a DataFrame cannot carry is judged first, ride by ride: not an object,
    an absent field, a value of the wrong JSON type (true, a list...), a time out
    of range. Those rides go to the frame blank, so `prepare_rides` refuses them
    too, and their own reason replaces its "a value is missing". The time's
    reason yields to an unreadable number's, as in `prepare_ride`.
    """
    columns: dict[str, list] = {column: [None] * len(rides) for column in SERVING_COLUMNS}
    early: dict[int, str] = {}
    late: dict[int, str] = {}  # time out of range: the frame may still name a worse number
    for index, ride in enumerate(rides):
        try:
            values, time_reason = _json_ride_values(ride)
        except MalformedRecord as error:
            early[index] = error.reason
            continue
        for column, value in zip(SERVING_COLUMNS, values):
            columns[column][index] = value
        if time_reason is not None:
            late[index] = time_reason
    prepared = prepare_rides(pd.DataFrame(columns))
    missing = RULE_MESSAGES[RULE_MISSING]
    reasons = list(prepared.reasons)
    for index, reason in late.items():
        if reasons[index] == missing:
            reasons[index] = reason
    for index, reason in early.items():
        reasons[index] = reason
    return PreparedRides(prepared.features, prepared.valid, reasons)


def _json_ride_values(ride) -> tuple[list, str | None]:
    """The six raw values of one JSON ride (time as UTC text) and a time reason, if any.

    Raises MalformedRecord for what the frame cannot hold: not an object, an
    absent field, a number field of the wrong JSON type.
    """
    if not isinstance(ride, dict):
        raise MalformedRecord(NOT_AN_OBJECT)
    if any(column not in ride for column in SERVING_COLUMNS):
        parse_record({**ride, contract.LABEL_COLUMN: _PLACEHOLDER_FARE})  # raises "missing column(s): ..."
    for column in SERVING_COLUMNS:
        value = ride[column]
        if column != contract.TIME_COLUMN and value is not None and (
            isinstance(value, bool) or not isinstance(value, (str, int, float))
        ):
            parse_number(column, value)  # raises "expected a number, got ..."
    values = [ride[column] for column in SERVING_COLUMNS]
    try:
        values[SERVING_COLUMNS.index(contract.TIME_COLUMN)] = pickup_to_utc(ride[contract.TIME_COLUMN])
    except MalformedRecord as error:
        values[SERVING_COLUMNS.index(contract.TIME_COLUMN)] = None
        return values, error.reason
    return values, None
