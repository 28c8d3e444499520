"""Every cleaning rule, alone and combined, with per-row reasons; vectorized == per record."""

import math

import numpy as np
import pandas as pd
import pytest

from taxifare_core.cleaning import check_ride, clean, first_failed_rule
from taxifare_core.contract import (
    CLEANING_RULES,
    RULE_DUPLICATE,
    RULE_FARE,
    RULE_LATITUDE,
    RULE_LONGITUDE,
    RULE_MISSING,
    RULE_PASSENGER_COUNT,
    RULE_ZERO_COORDINATES,
)
from taxifare_core.parsing import parse_frame, parse_record

GOOD = {
    "key": "k",
    "fare_amount": "8.5",
    "pickup_datetime": "2013-07-06 17:18:00 UTC",
    "pickup_longitude": "-73.950655",
    "pickup_latitude": "40.783282",
    "dropoff_longitude": "-73.984365",
    "dropoff_latitude": "40.769802",
    "passenger_count": "1",
}

# (changes to a good ride, the rule expected to drop it; None = kept)
CASES = [
    ({}, None),
    ({"fare_amount": ""}, RULE_MISSING),
    ({"pickup_datetime": ""}, RULE_MISSING),
    ({"passenger_count": "NaN"}, RULE_MISSING),
    ({"dropoff_latitude": "null"}, RULE_MISSING),
    (
        {"pickup_longitude": "0", "pickup_latitude": "0", "dropoff_longitude": "0", "dropoff_latitude": "0"},
        RULE_ZERO_COORDINATES,
    ),
    ({"passenger_count": "0"}, RULE_PASSENGER_COUNT),
    ({"passenger_count": "8"}, RULE_PASSENGER_COUNT),
    ({"passenger_count": "-1"}, RULE_PASSENGER_COUNT),
    ({"passenger_count": "7"}, None),
    ({"fare_amount": "0"}, RULE_FARE),
    ({"fare_amount": "-2.5"}, RULE_FARE),
    ({"fare_amount": "400"}, RULE_FARE),
    ({"fare_amount": "399.99"}, None),
    ({"fare_amount": "0.01"}, None),
    ({"pickup_latitude": "40.4999"}, RULE_LATITUDE),
    ({"dropoff_latitude": "40.9001"}, RULE_LATITUDE),
    ({"pickup_latitude": "40.5", "dropoff_latitude": "40.9"}, None),
    ({"pickup_longitude": "-74.3001"}, RULE_LONGITUDE),
    ({"dropoff_longitude": "-73.6999"}, RULE_LONGITUDE),
    ({"pickup_longitude": "-74.3", "dropoff_longitude": "-73.7"}, None),
    # Only all four zeros is the zero rule; one zero is simply outside NYC.
    ({"pickup_longitude": "0"}, RULE_LONGITUDE),
    # Combined defects: the first rule in contract order is reported.
    ({"fare_amount": "", "passenger_count": "0"}, RULE_MISSING),
    ({"passenger_count": "0", "fare_amount": "-1", "pickup_latitude": "10"}, RULE_PASSENGER_COUNT),
    ({"fare_amount": "500", "pickup_latitude": "10", "pickup_longitude": "10"}, RULE_FARE),
    ({"pickup_latitude": "41", "pickup_longitude": "-75"}, RULE_LATITUDE),
    (
        {
            "pickup_longitude": "0",
            "pickup_latitude": "0",
            "dropoff_longitude": "0",
            "dropoff_latitude": "0",
            "passenger_count": "0",
        },
        RULE_ZERO_COORDINATES,
    ),
]


def frame(cases) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **changes} for changes, _ in cases])


@pytest.mark.parametrize("changes, rule", CASES)
def test_each_rule_per_record(changes, rule):
    assert check_ride(parse_record({**GOOD, **changes})) == rule


def test_each_rule_vectorized_with_reasons():
    typed, bad = parse_frame(frame(CASES))
    assert bad.isna().all()
    assert first_failed_rule(typed).tolist() == [rule for _, rule in CASES]
    result = clean(typed)
    expected_kept = [i for i, (_, rule) in enumerate(CASES) if rule is None]
    assert result.kept.index.tolist() == expected_kept
    assert result.dropped.to_dict() == {i: rule for i, (_, rule) in enumerate(CASES) if rule is not None}


def test_duplicates_ignore_key_and_keep_the_first():
    rides = pd.DataFrame([GOOD, {**GOOD, "key": "other"}, {**GOOD, "fare_amount": "9"}, GOOD])
    result = clean(parse_frame(rides)[0])
    assert result.kept.index.tolist() == [0, 2]
    assert result.dropped.to_dict() == {1: RULE_DUPLICATE, 3: RULE_DUPLICATE}
    assert clean(parse_frame(rides)[0], dedupe=False).kept.index.tolist() == [0, 1, 2, 3]


def test_dirty_duplicates_report_their_defect_not_duplicate():
    dirty = {**GOOD, "passenger_count": "0"}
    result = clean(parse_frame(pd.DataFrame([dirty, dirty, GOOD]))[0])
    assert result.dropped.to_dict() == {0: RULE_PASSENGER_COUNT, 1: RULE_PASSENGER_COUNT}


def test_rule_names_are_the_contract_ones():
    assert set(rule for _, rule in CASES if rule) | {RULE_DUPLICATE} == set(CLEANING_RULES)


def test_vectorized_and_per_record_cleaning_agree_on_generated_rides(generated_rides_raw):
    typed, _ = parse_frame(generated_rides_raw)
    vectorized = first_failed_rule(typed)
    per_record = [check_ride(parse_record(r)) for r in generated_rides_raw.to_dict("records")]
    assert vectorized.tolist() == per_record
    # The dirt of raw rides: all-zero coordinates dominate, every kind shows up.
    counts = pd.Series(vectorized).value_counts()
    assert counts[RULE_ZERO_COORDINATES] > 100
    assert {RULE_PASSENGER_COUNT, RULE_FARE, RULE_LATITUDE} <= set(counts.index)


def test_typed_input_from_bigquery_like_rows():
    rows = pd.DataFrame([{**parse_record(GOOD)}, {**parse_record(GOOD), "fare_amount": math.nan}])
    result = clean(rows)
    assert result.dropped.to_dict() == {1: RULE_MISSING}
    assert np.isclose(result.kept["fare_amount"].iloc[0], 8.5)
