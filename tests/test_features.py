"""The 65 features: time (DST, boundaries), distances, one-hots, vectorized == per record."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from taxifare_core.cleaning import clean
from taxifare_core.contract import (
    COL_DAYS,
    COL_HAVERSINE,
    COL_HOUR_COS,
    COL_HOUR_SIN,
    COL_MANHATTAN,
    COL_PASSENGERS,
    COLS_DROPOFF_DISTRICT,
    COLS_MONTH,
    COLS_PICKUP_DISTRICT,
    COLS_WEEKDAY,
    EXAMPLE_RIDE,
    FEATURE_NAMES,
    N_FEATURES,
)
from taxifare_core.features import encode, encode_ride, format_csv, haversine_km, manhattan_km, processed_rows
from taxifare_core.parsing import parse_frame, parse_record

KM_PER_DEGREE = 6371 * np.pi / 180  # 111.19492664455873


def ride_at(utc: str, **overrides) -> dict:
    """A parsed ride like the example one, picked up at `utc`."""
    ride = parse_record({**EXAMPLE_RIDE, "fare_amount": 10.0, "pickup_datetime": utc})
    ride.update(overrides)
    return ride


def encode_both(rides: list[dict]) -> np.ndarray:
    """Encode with both encoders, check they agree, return the vectorized result."""
    vectorized = encode(pd.DataFrame(rides))
    per_record = np.stack([encode_ride(r) for r in rides])
    np.testing.assert_allclose(vectorized, per_record, atol=1e-6)
    return vectorized


def local_hour(features: np.ndarray) -> int:
    """The local hour (0-23) back from its sin/cos columns."""
    angle = np.arctan2(features[COL_HOUR_SIN], features[COL_HOUR_COS])
    return int(round(angle / (2 * np.pi) * 24)) % 24


# (UTC pickup, New York local hour, weekday 0=Monday, month 1-12)
TIME_CASES = [
    # Spring forward, Sunday 2013-03-10: 01:59 EST is followed by 03:00 EDT.
    ("2013-03-10 06:59:00 UTC", 1, 6, 3),
    ("2013-03-10 07:00:00 UTC", 3, 6, 3),
    # Fall back, Sunday 2013-11-03: 01:30 happens twice (EDT then EST), then 02:00 EST.
    ("2013-11-03 05:30:00 UTC", 1, 6, 11),
    ("2013-11-03 06:30:00 UTC", 1, 6, 11),
    ("2013-11-03 07:00:00 UTC", 2, 6, 11),
    # New Year in UTC is still Tuesday 2013-12-31 22:00 in New York.
    ("2014-01-01 03:00:00 UTC", 22, 1, 12),
    ("2014-01-01 05:00:00 UTC", 0, 2, 1),
    # A month boundary: Wednesday July 31st in New York, August 1st in UTC.
    ("2013-08-01 02:00:00 UTC", 22, 2, 7),
    # Leap day, winter time (UTC-5).
    ("2012-02-29 12:00:00 UTC", 7, 2, 2),
]


@pytest.mark.parametrize("utc, hour, weekday, month", TIME_CASES)
def test_time_features_in_new_york_time(utc, hour, weekday, month):
    features = encode_both([ride_at(utc)])[0]
    assert local_hour(features) == hour
    assert features[COLS_WEEKDAY].tolist() == [float(i == weekday) for i in range(7)]
    assert features[COLS_MONTH].tolist() == [float(i == month - 1) for i in range(12)]


def test_days_since_2009_in_utc():
    # 2009-01-01 -> 2013-07-06 is 1461 + 181 + 5 = 1647 days, plus 17:18 of the day.
    features = encode_both([ride_at("2013-07-06 17:18:00 UTC"), ride_at("2009-01-01 00:00:00 UTC")])
    assert features[0, COL_DAYS] == pytest.approx((1647 + 17.3 / 24) / 2090, abs=1e-7)
    assert features[1, COL_DAYS] == 0.0


def test_passenger_scaling():
    features = encode_both([ride_at("2013-07-06 17:18:00 UTC", passenger_count=p) for p in (1.0, 4.0, 7.0)])
    np.testing.assert_allclose(features[:, COL_PASSENGERS], [0.0, 3 / 7, 6 / 7], atol=1e-7)


def test_distances_by_hand():
    # One degree along a meridian or the equator is R * pi / 180 km either way.
    assert haversine_km(0, 0, 0, 1) == pytest.approx(KM_PER_DEGREE)
    assert manhattan_km(0, 0, 1, 0) == pytest.approx(KM_PER_DEGREE)
    # (0,0) -> (1,1): manhattan adds both degrees; haversine is the known 157.2494 km.
    assert manhattan_km(0, 0, 1, 1) == pytest.approx(2 * KM_PER_DEGREE)
    assert haversine_km(0, 0, 1, 1) == pytest.approx(157.2494, abs=1e-4)
    # The example ride: |dlat| = 0.013480 deg, |dlon| = 0.033710 deg.
    example = ride_at("2013-07-06 17:18:00 UTC")
    features = encode_both([example])[0]
    assert features[COL_MANHATTAN] * 100 == pytest.approx(0.04719 * KM_PER_DEGREE, abs=1e-4)
    assert features[COL_HAVERSINE] * 100 == pytest.approx(3.20996, abs=1e-4)
    assert features[COL_HAVERSINE] < features[COL_MANHATTAN]


def test_example_ride_districts():
    features = encode_both([ride_at("2013-07-06 17:18:00 UTC")])[0]
    names = np.array(FEATURE_NAMES)
    assert names[features == 1.0].tolist() == ["weekday_sat", "month_jul", "pickup_dr72j", "dropoff_dr5ru"]


def test_vectorized_and_per_record_agree_on_generated_rides(generated_rides_raw):
    typed, bad = parse_frame(generated_rides_raw)
    assert bad.isna().all()
    kept = clean(typed).kept
    assert len(kept) > 7000
    vectorized = encode(kept)
    records = generated_rides_raw.loc[kept.index].to_dict("records")
    per_record = np.stack([encode_ride(parse_record(r)) for r in records])
    np.testing.assert_allclose(vectorized, per_record, atol=1e-6)


def test_every_processed_row_is_well_formed(generated_rides_raw):
    rows = processed_rows(clean(parse_frame(generated_rides_raw)[0]).kept)
    assert rows.shape[1] == N_FEATURES + 1 and rows.dtype == np.float32
    assert (rows[:, COLS_WEEKDAY].sum(axis=1) == 1).all()
    assert (rows[:, COLS_MONTH].sum(axis=1) == 1).all()
    assert (rows[:, COLS_PICKUP_DISTRICT].sum(axis=1) <= 1).all()
    assert (rows[:, COLS_DROPOFF_DISTRICT].sum(axis=1) <= 1).all()
    # Most rides (generated as the real ones) start in one of the listed districts.
    assert rows[:, COLS_PICKUP_DISTRICT].sum() > 0.5 * len(rows)


def test_csv_round_trip_within_contract_precision(generated_rides_raw):
    rows = processed_rows(clean(parse_frame(generated_rides_raw)[0]).kept)
    text = format_csv(rows)
    back = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64)
    assert back.shape == rows.shape
    np.testing.assert_allclose(back, rows, atol=1e-6)


def test_empty_batch():
    empty = pd.DataFrame({k: [] for k in parse_record({**EXAMPLE_RIDE, "fare_amount": 1.0})})
    empty["pickup_datetime"] = pd.to_datetime(empty["pickup_datetime"], utc=True)
    assert encode(empty).shape == (0, 65)
    assert format_csv(np.zeros((0, 66), np.float32)) == ""


def test_encode_accepts_naive_datetimes_as_utc():
    aware = encode_both([ride_at("2013-07-06 17:18:00 UTC")])
    naive = encode(
        pd.DataFrame([{**ride_at("2013-07-06 17:18:00 UTC"), "pickup_datetime": datetime(2013, 7, 6, 17, 18)}])
    )
    np.testing.assert_array_equal(aware, naive)
    assert datetime(2013, 7, 6, 17, 18, tzinfo=UTC) == ride_at("2013-07-06 17:18:00 UTC")["pickup_datetime"]
