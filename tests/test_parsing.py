"""Parsing raw records: typed values, and a clear reason for every malformed one."""
from datetime import datetime, timedelta, timezone

import math
import pandas as pd
import pytest

from taxifare_core.contract import RAW_COLUMNS, RAW_COLUMNS_WITH_KEY
from taxifare_core.parsing import (
    MalformedRecord,
    header_columns,
    parse_csv_line,
    parse_frame,
    parse_record,
    parse_timestamp,
)

LINE = "2013-07-06 17:18:00.000001,8.5,2013-07-06 17:18:00 UTC,-73.950655,40.783282,-73.984365,40.769802,1"
UTC = timezone.utc


def test_a_good_line():
    ride = parse_csv_line(LINE, RAW_COLUMNS_WITH_KEY)
    assert ride == {
        "key": "2013-07-06 17:18:00.000001",
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
        (LINE.replace("2013-07-06 17:18:00 UTC", "2013-13-45 17:18:00 UTC"), "unreadable timestamp"),
        (LINE[:-1] + "1.5", "passenger_count: expected a whole number, got '1.5'"),
        (LINE.replace("-73.950655", "inf"), "pickup_longitude: expected a number, got 'inf'"),
        (LINE.replace("-73.950655", "1_000"), "pickup_longitude: expected a number, got '1_000'"),
        ("", "expected 8 fields, got 0"),
    ],
)
def test_malformed_lines_say_why(line, reason):
    with pytest.raises(MalformedRecord) as error:
        parse_csv_line(line, RAW_COLUMNS_WITH_KEY)
    assert reason in error.value.reason


def test_missing_values_parse_to_nan_for_the_cleaning_rule():
    ride = parse_csv_line(LINE.replace(",8.5,", ",,"), RAW_COLUMNS_WITH_KEY)
    assert math.isnan(ride["fare_amount"])
    assert parse_record({**ride, "pickup_datetime": None})["pickup_datetime"] is None


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
    rows = pd.DataFrame([
        good,
        {**good, "fare_amount": "eight"},
        {**good, "pickup_datetime": "yesterday"},
        {**good, "pickup_datetime": "2013-07-06T17:18:00Z"},
        {**good, "passenger_count": "2.5"},
        {**good, "dropoff_latitude": ""},
    ])
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
    rows = pd.DataFrame([{"fare_amount": 8.5, "pickup_datetime": datetime(2013, 7, 6, 17, 18, tzinfo=UTC),
                          "pickup_longitude": -73.95, "pickup_latitude": 40.78, "dropoff_longitude": -73.98,
                          "dropoff_latitude": 40.76, "passenger_count": 1}])
    typed, reasons = parse_frame(rows)
    assert reasons.isna().all()
    assert typed["pickup_datetime"].iloc[0] == pd.Timestamp("2013-07-06 17:18", tz="UTC")
