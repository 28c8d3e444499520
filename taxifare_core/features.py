"""The 65 features of CONTRACT.md section 3: vectorized `encode` and per-ride `encode_ride`.

`encode` is the hot path (numpy over a batch, geohash included); `encode_ride`
is written independently in plain Python (math, zoneinfo, pygeohash) so that
each checks the other.

    X = encode(clean(parse_frame(raw)[0]).kept)   # float32 (n, 65)
    x = encode_ride(parse_record(EXAMPLE_RIDE))   # float32 (65,)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
# The 66 processed columns in order: a continuous column index, or a one-hot slice.
_CSV_LAYOUT = (
    COL_PASSENGERS, COLS_WEEKDAY, COLS_MONTH, COL_DAYS, COL_HOUR_SIN, COL_HOUR_COS,
    COL_HAVERSINE, COL_MANHATTAN, COLS_PICKUP_DISTRICT, COLS_DROPOFF_DISTRICT, N_FEATURES,
)  # fmt: skip


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

    coords = [
        np.asarray(rides[c], dtype=np.float64)
        for c in ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")
    ]
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


@cache
def _one_hot_texts(width: int) -> pa.Array:
    """Texts of a one-hot group of `width` columns: hot column 0..width-1, then all zeros."""
    texts = [",".join("1" if j == hot else "0" for j in range(width)) for hot in range(width)]
    return pa.array([*texts, ",".join("0" * width)])


def _one_hot_text_column(block: np.ndarray) -> pa.Array:
    """One text per row for a one-hot block (n, width)."""
    width = block.shape[1]
    index = np.where(block.max(axis=1) > 0, block.argmax(axis=1), width).astype(np.int32)
    return pc.take(_one_hot_texts(width), pa.array(index))


def format_csv(rows: np.ndarray) -> str:
    """Processed rows (n, 66) as CSV text: no header, float32 shortest repr, lines joined by newline.

    Arrow casts the seven continuous columns to text; each one-hot group is one
    ready-made text ("0,0,1,0,...") picked by the index of its hot column, so a
    row is joined from 11 pieces instead of 66 (1.6x faster than Arrow's CSV writer).
    """
    if len(rows) == 0:
        return ""
    rows = np.asarray(rows, dtype=np.float32)
    pieces = [
        _one_hot_text_column(rows[:, part])
        if isinstance(part, slice)
        else pc.cast(pa.array(rows[:, part]), pa.string())
        for part in _CSV_LAYOUT
    ]
    return joined_lines(pc.binary_join_element_wise(*pieces, ","))


def joined_lines(lines: pa.Array) -> str:
    """Arrow text lines (no nulls) as one text joined by newlines, straight from Arrow's buffers."""
    if len(lines) == 0:
        return ""
    lines = pc.binary_join_element_wise(lines, "", "\n")  # each line now ends with a newline
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    text = lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    return text[:-1].decode()
