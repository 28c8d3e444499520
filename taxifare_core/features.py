"""The 65 features of CONTRACT.md section 3: vectorized `encode` and per-ride `encode_ride`.

`encode` is the hot path (numpy over a batch, geohash included); `encode_ride`
is written independently in plain Python (math, zoneinfo, pygeohash) so that
each checks the other.

    >>> X = encode(clean(parse_frame(raw)[0]).kept)   # float32 (n, 65)
    >>> x = encode_ride(parse_record(EXAMPLE_RIDE))   # float32 (65,)
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pygeohash

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
    DAYS_SCALE,
    DISTANCE_SCALE_KM,
    DISTRICTS,
    EARTH_RADIUS_KM,
    GEOHASH_PRECISION,
    LABEL_COLUMN,
    LOCAL_TIMEZONE,
    N_FEATURES,
    PASSENGER_COLUMN,
    PASSENGER_SCALE,
    TIME_COLUMN,
    TIME_ORIGIN,
)
from taxifare_core.geohash import district_one_hot

_NS_PER_DAY = 86_400 * 10**9
_ORIGIN_NS = pd.Timestamp(TIME_ORIGIN).value
_ZONE = ZoneInfo(LOCAL_TIMEZONE)
_DISTRICT_INDEX = {district: i for i, district in enumerate(DISTRICTS)}
_CONTINUOUS_COLUMNS = frozenset(
    {COL_PASSENGERS, COL_DAYS, COL_HOUR_SIN, COL_HOUR_COS, COL_HAVERSINE, COL_MANHATTAN, N_FEATURES}
)


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in km (arrays of degrees)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def manhattan_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """The seed's "manhattan" distance: R * (|dlat| + |dlon|) in radians, no cosine correction."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    return EARTH_RADIUS_KM * (np.abs(lat2 - lat1) + np.abs(lon2 - lon1))


def local_times(pickup_utc) -> pd.DatetimeIndex:
    """Pickup times converted from UTC to New York local time (DST included)."""
    stamps = pd.DatetimeIndex(pickup_utc)
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    return stamps.tz_convert(LOCAL_TIMEZONE)


def encode(rides: pd.DataFrame | Mapping) -> np.ndarray:
    """The (n, 65) float32 feature matrix of clean rides (DataFrame or dict of arrays)."""
    n = len(rides[PASSENGER_COLUMN])
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    rows = np.arange(n)
    passengers = np.asarray(rides[PASSENGER_COLUMN], dtype=np.float64)
    out[:, COL_PASSENGERS] = (passengers - 1) / PASSENGER_SCALE

    utc = pd.DatetimeIndex(rides[TIME_COLUMN])
    local = local_times(utc)
    out[rows, COLS_WEEKDAY.start + local.dayofweek.to_numpy()] = 1.0
    out[rows, COLS_MONTH.start + local.month.to_numpy() - 1] = 1.0
    utc_ns = utc.as_unit("ns").asi8
    out[:, COL_DAYS] = (utc_ns - _ORIGIN_NS) / _NS_PER_DAY / DAYS_SCALE
    angle = 2 * np.pi * local.hour.to_numpy() / 24
    out[:, COL_HOUR_SIN] = np.sin(angle)
    out[:, COL_HOUR_COS] = np.cos(angle)

    coords = [np.asarray(rides[c], dtype=np.float64) for c in
              ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")]
    out[:, COL_HAVERSINE] = haversine_km(*coords) / DISTANCE_SCALE_KM
    out[:, COL_MANHATTAN] = manhattan_km(*coords) / DISTANCE_SCALE_KM
    out[:, COLS_PICKUP_DISTRICT] = district_one_hot(coords[1], coords[0])
    out[:, COLS_DROPOFF_DISTRICT] = district_one_hot(coords[3], coords[2])
    return out


def encode_ride(ride: Mapping) -> np.ndarray:
    """The 65 float32 features of one clean parsed ride (pure Python, independent of `encode`)."""
    out = [0.0] * N_FEATURES
    out[COL_PASSENGERS] = (ride[PASSENGER_COLUMN] - 1) / PASSENGER_SCALE
    utc: datetime = ride[TIME_COLUMN]
    local = utc.astimezone(_ZONE)
    out[COLS_WEEKDAY.start + local.weekday()] = 1.0
    out[COLS_MONTH.start + local.month - 1] = 1.0
    out[COL_DAYS] = (utc - TIME_ORIGIN).total_seconds() / 86_400 / DAYS_SCALE
    out[COL_HOUR_SIN] = math.sin(2 * math.pi * local.hour / 24)
    out[COL_HOUR_COS] = math.cos(2 * math.pi * local.hour / 24)

    lon1, lat1 = ride["pickup_longitude"], ride["pickup_latitude"]
    lon2, lat2 = ride["dropoff_longitude"], ride["dropoff_latitude"]
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2) - math.radians(lon1)
    a = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    out[COL_HAVERSINE] = 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a)) / DISTANCE_SCALE_KM
    out[COL_MANHATTAN] = EARTH_RADIUS_KM * (abs(dlat) + abs(dlon)) / DISTANCE_SCALE_KM

    for columns, lat, lon in ((COLS_PICKUP_DISTRICT, lat1, lon1), (COLS_DROPOFF_DISTRICT, lat2, lon2)):
        district = pygeohash.encode(float(lat), float(lon), precision=GEOHASH_PRECISION)
        if district in _DISTRICT_INDEX:
            out[columns.start + _DISTRICT_INDEX[district]] = 1.0
    return np.asarray(out, dtype=np.float32)


def processed_rows(rides: pd.DataFrame) -> np.ndarray:
    """The (n, 66) float32 processed rows of clean rides: 65 features then fare_amount."""
    rows = np.empty((len(rides), N_FEATURES + 1), dtype=np.float32)
    rows[:, :N_FEATURES] = encode(rides)
    rows[:, N_FEATURES] = np.asarray(rides[LABEL_COLUMN], dtype=np.float32)
    return rows


def format_csv(rows: np.ndarray) -> str:
    """Processed rows as CSV text (no header, float32 shortest repr), one line per row, no final newline."""
    if len(rows) == 0:
        return ""
    # One-hot columns written as int8 format about twice as fast as float32.
    arrays = [
        pa.array(rows[:, j]) if j in _CONTINUOUS_COLUMNS else pa.array(rows[:, j].astype(np.int8))
        for j in range(rows.shape[1])
    ]
    table = pa.Table.from_arrays(arrays, names=[str(j) for j in range(len(arrays))])
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue().decode().rstrip("\n")
