"""Parsing raw records: typed values, and a clear reason for every malformed one."""

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from pipelines.preprocessing.parse import RawBlock, parse_block
from taxifare_core.contract import RAW_COLUMNS, RAW_COLUMNS_WITH_KEY
from taxifare_core.parsing import (
    MAX_RECORD_CHARS,
    MalformedRecord,
    clip_record,
    csv_fields,
    header_columns,
    parse_frame,
    parse_number,
    parse_record,
    parse_timestamp,
)

LINE = "2013-07-06 17:18:00.000001,8.5,2013-07-06 17:18:00 UTC,-73.950655,40.783282,-73.984365,40.769802,1"
UTC = UTC


def parse_line(line: str) -> tuple[list[dict], list[str]]:
    """One CSV line through the real path (a block of the preprocessing's CSV parse): (rides, reasons)."""
    rides, dead, _ = parse_block(RawBlock("rides.csv", 2, RAW_COLUMNS_WITH_KEY, line.encode()))
    return rides.to_dict("records"), [json.loads(letter)["reason"] for letter in dead]


def test_a_good_line():
    (ride,), reasons = parse_line(LINE)
    assert reasons == []
    assert ride == {
        "fare_amount": 8.5,
        "pickup_datetime": datetime(2013, 7, 6, 17, 18, tzinfo=UTC),
        "pickup_longitude": -73.950655,
        "pickup_latitude": 40.783282,
        "dropoff_longitude": -73.984365,
        "dropoff_latitude": 40.769802,
        "passenger_count": 1.0,
    }


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2013-07-06 17:18:00 UTC", datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        ("2013-07-06T17:18:00Z", datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        ("2013-07-06 13:18:00-04:00", datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        ("2013-07-06 17:18:00", datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        (datetime(2013, 7, 6, 17, 18), datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        (datetime(2013, 7, 6, 12, 18, tzinfo=timezone(timedelta(hours=-5))), datetime(2013, 7, 6, 17, 18, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_timestamps(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    "line, reason",
    [
        ("k,8.5,2013-07-06 17:18:00 UTC,-73.95,40.78,-73.98,40.76", "expected 8 fields, got 7"),
        (LINE + ",extra", "expected 8 fields, got 9"),
        (LINE.replace(",8.5,", ",eight,"), "fare_amount: expected a number, got 'eight'"),
        (LINE.replace("2013-07-06 17:18:00 UTC", "yesterday"), "pickup_datetime: unreadable timestamp 'yesterday'"),
        (LINE.replace("2013-07-06 17:18:00 UTC", "2013-13-45 17:18:00 UTC"), "pickup_datetime: invalid date"),
        (LINE[:-1] + "1.5", "passenger_count: expected a whole number, got"),
        (LINE.replace("-73.950655", "inf"), "pickup_longitude: not a finite number"),
        (LINE.replace("-73.950655", "1_000"), "pickup_longitude: expected a number, got '1_000'"),
    ],
)
def test_malformed_lines_say_why(line, reason):
    rides, reasons = parse_line(line)
    assert rides == [] and len(reasons) == 1
    assert reason in reasons[0]


def test_missing_values_parse_to_nan_for_the_cleaning_rule():
    (ride,), _ = parse_line(LINE.replace(",8.5,", ",,"))
    assert math.isnan(ride["fare_amount"])
    record = dict(zip(RAW_COLUMNS_WITH_KEY, csv_fields(LINE)))
    assert parse_record({**record, "pickup_datetime": None})["pickup_datetime"] is None


def test_a_dict_without_a_contract_column_is_malformed():
    record = dict(zip(RAW_COLUMNS, [8.5, "2013-07-06 17:18:00 UTC", -73.9, 40.7, -73.9, 40.7, 1]))
    assert parse_record(record)["key"] is None
    del record["passenger_count"]
    with pytest.raises(MalformedRecord, match="missing column.*passenger_count"):
        parse_record(record)


def test_header_columns():
    assert header_columns(",".join(RAW_COLUMNS_WITH_KEY) + ",extra")[-1] == "extra"
    with pytest.raises(MalformedRecord, match="lacks column.*fare_amount"):
        header_columns("key,pickup_datetime")


def test_parse_frame_matches_parse_record_and_reports_bad_rows():
    good = dict(zip(RAW_COLUMNS_WITH_KEY, next(iter([LINE.split(",")]))))
    rows = pd.DataFrame(
        [
            good,
            {**good, "fare_amount": "eight"},
            {**good, "pickup_datetime": "yesterday"},
            {**good, "pickup_datetime": "2013-07-06T17:18:00Z"},
            {**good, "passenger_count": "2.5"},
            {**good, "dropoff_latitude": ""},
        ]
    )
    typed, reasons = parse_frame(rows)
    assert reasons.tolist() == [
        None,
        "fare_amount: expected a number, got 'eight'",
        "pickup_datetime: unreadable timestamp 'yesterday'",
        None,
        "passenger_count: expected a whole number, got '2.5'",
        None,
    ]
    for i in (0, 3, 5):
        expected = parse_record(rows.iloc[i].to_dict())
        got = typed.iloc[i].to_dict()
        assert got["pickup_datetime"] == expected["pickup_datetime"]
        for column in ("fare_amount", "dropoff_latitude", "passenger_count"):
            assert got[column] == expected[column] or (math.isnan(got[column]) and math.isnan(expected[column]))


def test_parse_frame_of_typed_bigquery_rows():
    rows = pd.DataFrame(
        [
            {
                "fare_amount": 8.5,
                "pickup_datetime": datetime(2013, 7, 6, 17, 18, tzinfo=UTC),
                "pickup_longitude": -73.95,
                "pickup_latitude": 40.78,
                "dropoff_longitude": -73.98,
                "dropoff_latitude": 40.76,
                "passenger_count": 1,
            }
        ]
    )
    typed, reasons = parse_frame(rows)
    assert reasons.isna().all()
    assert typed["pickup_datetime"].iloc[0] == pd.Timestamp("2013-07-06 17:18", tz="UTC")


# --- issue 9: times out of range, impossible dates, non-finite numbers, huge values ---------------

GOOD = dict(zip(RAW_COLUMNS_WITH_KEY, LINE.split(",")))
BAD_TIMES = [
    ("2300-01-06 09:50:45 UTC", "pickup_datetime: out of range"),
    ("0001-01-01 00:00:00 UTC", "pickup_datetime: out of range"),
    ("9999-12-31 23:59:59 UTC", "pickup_datetime: out of range"),
    ("0000-01-01 00:00:00 UTC", "pickup_datetime: out of range"),
    ("1600-01-01T00:00:00Z", "pickup_datetime: out of range"),
    ("2013-02-30 10:00:00 UTC", "pickup_datetime: invalid date '2013-02-30 10:00:00 UTC'"),
    ("2013-04-31 10:00:00 UTC", "pickup_datetime: invalid date"),
    ("2014-02-29 10:00:00", "pickup_datetime: invalid date"),
    ("2013-01-01 24:00:00 UTC", "pickup_datetime: invalid time"),
    ("2013-01-01 23:59:60 UTC", "pickup_datetime: invalid time"),
    ("10000-01-01 00:00:00 UTC", "pickup_datetime: unreadable timestamp"),
]


@pytest.mark.parametrize("stamp, reason", BAD_TIMES)
def test_times_that_cannot_be_read_are_bad_input_in_both_parsers(stamp, reason):
    with pytest.raises(MalformedRecord) as error:
        parse_timestamp(stamp)
    assert error.value.reason.startswith(reason)
    typed, reasons = parse_frame(pd.DataFrame([GOOD, {**GOOD, "pickup_datetime": stamp}, GOOD]))
    assert reasons.tolist()[0] is None and reasons.tolist()[2] is None
    assert reasons.iloc[1].startswith(reason)
    assert typed["pickup_datetime"].iloc[0] == typed["pickup_datetime"].iloc[2] == pd.Timestamp(GOOD["pickup_datetime"])


def test_a_leap_day_and_the_range_edges_are_read():
    stamps = ["2012-02-29 10:00:00 UTC", "1677-09-22 00:00:00 UTC", "2262-04-10 00:00:00 UTC", "2013-07-06T17:18:00Z"]
    typed, reasons = parse_frame(pd.DataFrame([{**GOOD, "pickup_datetime": s} for s in stamps]))
    assert reasons.isna().all()
    assert typed["pickup_datetime"].tolist() == [pd.Timestamp(s.replace(" UTC", ""), tz="UTC") for s in stamps]


def test_datetimes_out_of_range_in_typed_rows_are_bad_input():
    typed, reasons = parse_frame(
        pd.DataFrame(
            [
                {**GOOD, "pickup_datetime": datetime(2300, 1, 6, 9, 50, tzinfo=UTC)},
                {**GOOD, "pickup_datetime": datetime(2013, 7, 6, 17, 18, tzinfo=UTC)},
            ]
        )
    )
    assert reasons.iloc[0].startswith("pickup_datetime: out of range") and reasons.iloc[1] is None
    assert typed["pickup_datetime"].iloc[1] == pd.Timestamp("2013-07-06 17:18", tz="UTC")


@pytest.mark.parametrize("text", ["1e309", "-1e309", "inf", "-inf", "+Infinity", "INF"])
def test_non_finite_numbers_are_bad_input_whatever_their_spelling(text):
    with pytest.raises(MalformedRecord, match="fare_amount: not a finite number"):
        parse_number("fare_amount", text)
    _, reasons = parse_frame(pd.DataFrame([{**GOOD, "fare_amount": text}]))
    assert reasons.tolist() == ["fare_amount: not a finite number"]
    _, reasons = parse_frame(pd.DataFrame([{**GOOD, "fare_amount": float(text)}]))  # typed rows: the same
    assert reasons.tolist() == ["fare_amount: not a finite number"]


def test_nan_is_missing_and_tiny_numbers_are_numbers():
    typed, reasons = parse_frame(
        pd.DataFrame(
            [
                {**GOOD, "fare_amount": "NaN"},
                {**GOOD, "fare_amount": "1e-400"},
                {**GOOD, "fare_amount": "-0"},
                {**GOOD, "passenger_count": "2e0"},
            ]
        )
    )
    assert reasons.isna().all()
    assert math.isnan(typed["fare_amount"].iloc[0]) and typed["fare_amount"].iloc[1:3].tolist() == [0.0, 0.0]
    assert typed["passenger_count"].iloc[3] == 2.0


def test_a_huge_value_gives_a_short_reason():
    _, reasons = parse_frame(pd.DataFrame([{**GOOD, "fare_amount": "9" * 3_000_000 + "x"}]))
    assert reasons.iloc[0].startswith("fare_amount: expected a number, got '999") and len(reasons.iloc[0]) < 200
    assert "3,000,003 characters" in reasons.iloc[0]


def test_clip_record_cuts_and_says_so():
    assert clip_record("short", "why") == ("short", "why")
    record, reason = clip_record("x" * (MAX_RECORD_CHARS + 5), "why")
    assert len(record) == MAX_RECORD_CHARS
    assert reason == f"why (record cut to its first {MAX_RECORD_CHARS:,} of {MAX_RECORD_CHARS + 5:,} characters)"


def test_a_stray_carriage_return_is_a_reason_not_a_crash():
    rides, reasons = parse_line(LINE.replace("-73.95", "-73\r.95"))
    assert rides == [] and len(reasons) == 1 and "stray carriage return" in reasons[0]
    with pytest.raises(MalformedRecord, match="unreadable CSV line"):
        csv_fields("a," + "b" * 200_000)  # over the csv module's field limit
