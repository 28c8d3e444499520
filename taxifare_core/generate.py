"""Seeded generator of realistic raw NYC taxi rides: the project's embedded default data.

Rides have the raw table's columns plus `key` (CONTRACT.md section 1) and its usual
dirt: zero coordinates, rides outside New York, bad fares and passenger counts, a
few empty fields and exact duplicates. The figures below were measured on the real
8,000-ride sample (/work/shared/data/nyc_taxi_fare_sample_8k.csv) - shares, profiles,
fitted zone weights, never its rows - except the public NYC meter and toll tariffs
and taxi speeds, which the sample cannot show.

Row i depends only on (seed, i): rows are made in fixed blocks of BLOCK_ROWS, each
seeded from SeedSequence(seed, spawn_key=(block,)), so any sharding or start row
gives the same rows. Pure numpy/pandas/pyarrow (no Beam, no TensorFlow).

    python scripts/generate_rides.py --rows 1000000 --num_shards 4 --output /tmp/rides

    >>> from taxifare_core import cleaning, contract, generate
    >>> rides = generate.generate_rides(1000, seed=1)
    >>> tuple(rides.columns) == contract.RAW_COLUMNS_WITH_KEY
    True
    >>> 0.01 < len(cleaning.clean(rides).dropped) / len(rides) < 0.06
    True

CSV shards of these rows: `taxifare_core.ride_shards`; the embedded default sample
made from them once: `taxifare_core.default_sample`.

Pickup stamps copy the real table's clock: its "UTC" stamps follow New York's wall
clock (fewest rides at 04:00-05:00, most at 18:00-22:00 on the stamp), so the stamp
is drawn from that profile as written, and the pipeline's UTC-to-New-York conversion
treats generated and real rows alike. In memory, coordinates and fares are float64
(the CSV values exactly) and passenger_count is a nullable Int16.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxifare_core import contract

BLOCK_ROWS = 100_000
DEFAULT_SEED = 42
# Bumped whenever the generated rows change, so an older default sample on disk is remade.
GENERATOR_VERSION = 1
FIRST_DAY, LAST_DAY = np.datetime64("2009-01-01"), np.datetime64("2015-06-30")

# --- time, measured on the sample's stamps -----------------------------------

YEAR_RIDES = {2009: 1232, 2010: 1224, 2011: 1286, 2012: 1294, 2013: 1235, 2014: 1159, 2015: 570}
MONTH_RIDES = (642, 580, 696, 614, 671, 677, 616, 549, 589, 627, 591, 578)  # 2009-2014 only
WEEKDAY_RIDES = (1056, 1136, 1163, 1151, 1164, 1242, 1088)  # Monday first
HOUR_RIDES_WEEKDAY = (170, 109, 69, 57, 39, 57, 135, 269, 322, 333, 239, 266,
                      287, 278, 277, 241, 228, 292, 377, 338, 353, 336, 316, 282)  # fmt: skip
HOUR_RIDES_WEEKEND = (144, 129, 95, 88, 64, 23, 22, 38, 56, 76, 90, 126,
                      121, 120, 123, 111, 98, 101, 112, 127, 104, 118, 130, 114)  # fmt: skip
# Two vendors: one stamps whole minutes and carries most 5-6 passenger rides.
MINUTE_VENDOR_SHARE = (0.469, 0.504, 0.489, 0.505, 0.511, 0.495, 0.012)  # 2009..2015
PASSENGER_RIDES = {  # passengers 1..6, by vendor
    "seconds": (3359, 627, 173, 76, 22, 22),
    "minutes": (2262, 520, 182, 73, 526, 126),
}

# --- places: a Gaussian mixture of named zones --------------------------------
# Centres and spreads are placed by hand (Manhattan zones stretched along its
# street grid, 29 degrees east of north); the pickup and dropoff weights (%) were
# fitted by EM to the sample's in-box pickups and dropoffs.
# name, lon, lat, sd along the axis (km), sd across (km), axis angle (deg), pickup %, dropoff %
ZONES = (
    ("financial_district", -74.009, 40.709, 0.6, 0.5, 29, 2.96, 3.09),
    ("tribeca_soho", -74.004, 40.722, 0.7, 0.6, 29, 3.49, 3.52),
    ("village", -73.996, 40.733, 0.8, 0.8, 29, 16.76, 12.15),
    ("lower_east_side", -73.984, 40.722, 0.6, 0.6, 29, 1.89, 2.01),
    ("chelsea_flatiron", -73.993, 40.745, 0.8, 0.7, 29, 7.01, 6.62),
    ("midtown", -73.981, 40.757, 1.2, 0.8, 29, 37.69, 38.38),
    ("upper_east_side", -73.958, 40.774, 1.2, 0.5, 29, 13.55, 13.25),
    ("upper_west_side", -73.975, 40.786, 1.2, 0.5, 29, 8.29, 7.91),
    ("harlem", -73.945, 40.812, 1.5, 0.7, 29, 0.68, 1.48),
    ("upper_manhattan", -73.935, 40.850, 2.0, 0.7, 29, 0.17, 0.93),
    ("jfk", -73.785, 40.645, 0.5, 0.5, 0, 1.64, 0.70),
    ("lga", -73.872, 40.773, 0.4, 0.3, 0, 2.01, 1.16),
    ("ewr", -74.178, 40.692, 0.4, 0.4, 0, 0.00, 0.17),
    ("williamsburg", -73.957, 40.714, 0.6, 0.6, 0, 0.74, 1.21),
    ("downtown_brooklyn", -73.988, 40.688, 0.8, 0.8, 0, 1.24, 1.58),
    ("brooklyn", -73.955, 40.655, 3.0, 3.0, 0, 0.24, 1.66),
    ("long_island_city", -73.930, 40.752, 1.2, 1.2, 0, 1.15, 1.85),
    ("queens", -73.840, 40.725, 4.0, 4.0, 0, 0.27, 1.57),
    ("bronx", -73.900, 40.840, 3.0, 3.0, 0, 0.06, 0.38),
    ("new_york_area", -73.950, 40.730, 10.0, 10.0, 0, 0.18, 0.39),
)
ZONE_NAMES = tuple(z[0] for z in ZONES)
MANHATTAN_ZONES = ZONE_NAMES[:10]  # the zones with the 29-degree axis
AIRPORT_ZONES = ("jfk", "lga", "ewr")
# Trips that stay in their pickup zone (never at an airport): tuned so that trip
# lengths match the sample's quartiles.
SAME_ZONE_SHARE = 0.45
ZERO_DISTANCE_SHARE = 0.011  # the sample's rides whose dropoff equals the pickup
KM_PER_DEG_LAT = 110.57
KM_PER_DEG_LON = 111.32 * np.cos(np.radians(40.75))
KM_PER_MILE = 1.609344

# --- the meter (NYC TLC tariffs; fare_amount excludes surcharges and tips) ----

FLAG_DROP = 2.5
RATE_CHANGE = np.datetime64("2012-09-04")
UNIT_PRICE = (0.4, 0.5)  # per 1/5 mile or per slow unit, before / after the change
SLOW_UNIT_MINUTES = (2.0, 1.0)
JFK_FLAT_FARE = (45.0, 52.0)
# Bridge and tunnel tolls, which some vendors add into fare_amount.
TOLLS = ((np.datetime64("2009-01-01"), 4.57), (np.datetime64("2010-12-30"), 4.80),
         (np.datetime64("2013-03-03"), 5.33), (np.datetime64("2015-03-22"), 5.54))  # fmt: skip
JFK_TOLL_SHARE, LONG_TRIP_TOLL_SHARE, LONG_TRIP_KM = 0.7, 0.2, 8.0
ODD_FARE_SHARE = 0.02  # hand-entered round-dollar fares
# Mean taxi speed (km/h) by hour of the stamp, weekdays (weekends run freer): typical
# city speeds, tuned with the meter so that fares match the sample's quartiles.
SPEED_KMH = (24, 25, 26, 27, 28, 26, 21, 15, 12, 12, 12, 12,
             12, 12, 12, 12, 13, 13, 13, 14, 16, 18, 20, 22)  # fmt: skip
WEEKEND_SPEEDUP = 1.2

# --- dirt: share of rows per kind (the sample's counts by contract rule) ------
# Missing values and duplicates are absent from the sample; 0.1% each exercises
# those rules. The sample's outside-box rows are split into its kinds.
DIRT = {
    "zero_coordinates": 0.0185,
    "passenger_zero": 0.0039,
    "passenger_many": 0.0001,
    "fare_not_positive": 0.0002,
    "fare_huge": 0.00005,
    "partial_zero": 0.001,
    "gps_default": 0.001,  # a receiver's stuck position, far north-east of the box
    "swapped_lat_lon": 0.0005,
    "typo": 0.0005,
    "far_away": 0.00125,
    "missing": 0.001,
    "duplicate": 0.001,
}
GPS_DEFAULT_POINT = (-73.137393, 41.366138)
BOX_CENTRE = (
    (contract.LONGITUDE_MIN + contract.LONGITUDE_MAX) / 2,
    (contract.LATITUDE_MIN + contract.LATITUDE_MAX) / 2,
)


def _weights(counts) -> np.ndarray:
    """Counts to probabilities."""
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


@lru_cache(maxsize=1)
def _day_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every day of the range, its cumulative draw probability and whether it is a weekend."""
    days = np.arange(FIRST_DAY, LAST_DAY + 1)
    years = days.astype("datetime64[Y]").astype(int) + 1970
    months = days.astype("datetime64[M]").astype(int) % 12
    weekday = (days.astype(int) + 3) % 7  # 1970-01-01 was a Thursday
    days_in_year = {y: (years == y).sum() for y in YEAR_RIDES}
    per_day = np.array([YEAR_RIDES[y] / days_in_year[y] for y in years])
    weight = per_day * _weights(MONTH_RIDES)[months] * _weights(WEEKDAY_RIDES)[weekday]
    return days, np.cumsum(weight) / weight.sum(), weekday >= 5


@lru_cache(maxsize=1)
def _zone_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zone centres, 2x2 degree transforms, cumulative pickup/dropoff weights, airport flags."""
    centres = np.array([(z[1], z[2]) for z in ZONES])
    transforms = []
    for _, _, _, along, across, angle, _, _ in ZONES:
        a = np.radians(angle)
        km = np.array([[np.sin(a) * along, np.cos(a) * across],
                       [np.cos(a) * along, -np.sin(a) * across]])  # fmt: skip
        transforms.append(km / np.array([[KM_PER_DEG_LON], [KM_PER_DEG_LAT]]))
    pickup = np.cumsum(_weights([z[6] for z in ZONES]))
    dropoff = np.cumsum(_weights([z[7] for z in ZONES]))
    airport = np.isin(ZONE_NAMES, AIRPORT_ZONES)
    return centres, np.array(transforms), pickup, dropoff, airport


def _draw(rng: np.random.Generator, cumulative: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn from a cumulative distribution."""
    return np.minimum(np.searchsorted(cumulative, rng.random(n), side="right"), len(cumulative) - 1)


# Arrow casts second timestamps to "%Y-%m-%d %H:%M:%S" text 30x faster than its strftime.
ISO_SECONDS = "%Y-%m-%d %H:%M:%S"
TIME_INDEX = contract.RAW_COLUMNS_WITH_KEY.index(contract.TIME_COLUMN)


def stamp_text(stamps: pa.Array) -> pa.Array:
    """Naive second-resolution timestamps as "%Y-%m-%d %H:%M:%S" strings."""
    return stamps.cast(pa.string())


def _haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance (CONTRACT.md section 3)."""
    lon1, lat1, lon2, lat2 = map(np.radians, (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2
    a = a + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * contract.EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def _times(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pickup stamps (datetime64[s]), weekend flags, and whether the vendor stamps whole minutes."""
    days, cumulative, weekend = _day_table()
    day = _draw(rng, cumulative, n)
    u = rng.random(n)
    hour = np.where(
        weekend[day],
        np.searchsorted(np.cumsum(_weights(HOUR_RIDES_WEEKEND)), u, side="right"),
        np.searchsorted(np.cumsum(_weights(HOUR_RIDES_WEEKDAY)), u, side="right"),
    ).clip(0, 23)
    year_index = (days[day].astype("datetime64[Y]") - FIRST_DAY.astype("datetime64[Y]")).astype(int)
    whole_minutes = rng.random(n) < np.asarray(MINUTE_VENDOR_SHARE)[year_index]
    seconds = np.where(whole_minutes, 0, rng.integers(0, 60, n))
    offset = hour * 3600 + rng.integers(0, 60, n) * 60 + seconds
    return days[day].astype("datetime64[s]") + offset, weekend[day], whole_minutes


def _places(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Pickup/dropoff coordinates and zone indices."""
    centres, transforms, pickup_cum, dropoff_cum, airport = _zone_tables()
    pickup_zone = _draw(rng, pickup_cum, n)
    dropoff_zone = np.where(
        (rng.random(n) < SAME_ZONE_SHARE) & ~airport[pickup_zone],
        pickup_zone,
        _draw(rng, dropoff_cum, n),
    )
    points = []
    for zone in (pickup_zone, dropoff_zone):
        offset = np.einsum("nij,nj->ni", transforms[zone], rng.standard_normal((n, 2)))
        points.append(centres[zone] + offset)
    (plon, plat), (dlon, dlat) = points[0].T, points[1].T
    return plon, plat, dlon, dlat, pickup_zone, dropoff_zone


def _fares(rng, stamps, weekend, plon, plat, dlon, dlat, pickup_zone, dropoff_zone) -> np.ndarray:
    """Meter fares: flag drop + distance and slow-traffic units, plus tolls and odd fares."""
    n = len(stamps)
    after = (stamps >= RATE_CHANGE).astype(int)
    straight = _haversine_km(plon, plat, dlon, dlat)
    # Streets add a detour to the straight line, more on short trips.
    driven = straight * 1.25 * rng.lognormal(0.0, 0.2, n) + 0.5 * rng.random(n)
    hour = (stamps - stamps.astype("datetime64[D]")).astype(int) // 3600
    speed = np.asarray(SPEED_KMH)[hour] * np.where(weekend, WEEKEND_SPEEDUP, 1.0)
    # Longer trips reach highways; the lognormal is the traffic of the day.
    speed = speed * (1 + np.minimum(driven, 20) / 15) * rng.lognormal(0.0, 0.4, n)
    minutes = driven / speed * 60
    # Lights and pickup queues add slow time even to the shortest ride.
    slow_minutes = minutes * np.clip(1.1 - speed / 30, 0.05, 0.9) + rng.exponential(1.5, n)
    units = np.floor(driven / KM_PER_MILE * 5)
    units = units + np.floor(slow_minutes / np.take(SLOW_UNIT_MINUTES, after))
    fare = FLAG_DROP + np.take(UNIT_PRICE, after) * units

    manhattan, jfk = np.isin(ZONE_NAMES, MANHATTAN_ZONES), ZONE_NAMES.index("jfk")
    flat = (pickup_zone == jfk) & manhattan[dropoff_zone]
    flat |= (dropoff_zone == jfk) & manhattan[pickup_zone]
    fare = np.where(flat, np.take(JFK_FLAT_FARE, after), fare)
    odd = rng.random(n) < ODD_FARE_SHARE
    fare = np.where(odd, np.round(fare * rng.uniform(0.8, 1.2, n)), fare)
    toll_share = np.where(straight > LONG_TRIP_KM, LONG_TRIP_TOLL_SHARE, 0.0)
    toll_share = np.where(flat, JFK_TOLL_SHARE, toll_share)
    toll_dates, toll_amounts = (np.asarray(x) for x in zip(*TOLLS))
    toll = toll_amounts[np.searchsorted(toll_dates, stamps, side="right") - 1]
    return np.round(fare + np.where(rng.random(n) < toll_share, toll, 0.0), 2)


def _clean_rides(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n clean rides: the seven raw columns as numpy arrays (coordinates as one 4 x n array)."""
    stamps, weekend, whole_minutes = _times(rng, n)
    plon, plat, dlon, dlat, pickup_zone, dropoff_zone = _places(rng, n)
    fare = _fares(rng, stamps, weekend, plon, plat, dlon, dlat, pickup_zone, dropoff_zone)
    # Rides that end where they start keep the fare of the trip (the GPS froze).
    same_spot = rng.random(n) < ZERO_DISTANCE_SHARE
    dlon, dlat = np.where(same_spot, plon, dlon), np.where(same_spot, plat, dlat)
    seconds, minutes = (_draw(rng, np.cumsum(_weights(PASSENGER_RIDES[v])), n) + 1
                        for v in ("seconds", "minutes"))  # fmt: skip
    passengers = np.where(whole_minutes, minutes, seconds)
    coords = np.stack([plon, plat, dlon, dlat])  # contract.COORDINATE_COLUMNS order
    return {"fare": fare, "stamps": stamps, "coords": coords, "passengers": passengers}


def _add_dirt(rng: np.random.Generator, rides: dict[str, np.ndarray]) -> np.ndarray:
    """Dirty some rides in place (at most one kind each); return the column each row misses (-1)."""
    coords, n = rides["coords"], len(rides["fare"])
    kind = _draw(rng, np.cumsum([*DIRT.values(), 1 - sum(DIRT.values())]), n)
    dirt = {name: kind == i for i, name in enumerate(DIRT)}
    coords[:, dirt["zero_coordinates"]] = 0.0
    end_of = rng.integers(0, 2, n)  # the end (pickup 0, dropoff 1) a one-ended dirt hits
    for end in (0, 1):
        lon, lat = 2 * end, 2 * end + 1
        coords[lon : lat + 1, dirt["partial_zero"] & (end_of == end)] = 0.0
        stuck = dirt["gps_default"] & ((end_of == end) | (rng.random(n) < 0.3))
        coords[lon : lat + 1, stuck] = np.array(GPS_DEFAULT_POINT)[:, None]
        # Far rides start or end 40-60 km from the box centre: beyond its corners (34 km).
        far = dirt["far_away"] & (end_of == end)
        angle, km = rng.uniform(0, 2 * np.pi, n), rng.uniform(40, 60, n)
        coords[lon, far] = (BOX_CENTRE[0] + km * np.cos(angle) / KM_PER_DEG_LON)[far]
        coords[lat, far] = (BOX_CENTRE[1] + km * np.sin(angle) / KM_PER_DEG_LAT)[far]
    swapped = dirt["swapped_lat_lon"]
    coords[:, swapped] = coords[[1, 0, 3, 2]][:, swapped]
    # A typo scales one coordinate by ten, either way.
    rows = np.flatnonzero(dirt["typo"])
    factor = np.where(rng.random(n) < 0.5, 10.0, 0.1)
    coords[rng.integers(0, 4, n)[rows], rows] *= factor[rows]

    passengers, fare = rides["passengers"], rides["fare"]
    passengers[dirt["passenger_zero"]] = 0
    # Absurd counts like those of the full public data set (9, 49, 208).
    passengers[dirt["passenger_many"]] = rng.choice([9, 49, 208], n)[dirt["passenger_many"]]
    fare[:] = np.where(dirt["fare_not_positive"], np.where(rng.random(n) < 0.5, -fare, 0.0), fare)
    fare[:] = np.where(dirt["fare_huge"], np.round(rng.uniform(400, 2000, n), 2), fare)
    coords[:] = np.round(coords, 6)

    # Exact duplicates copy the seven columns of another (non-duplicate) row of the block.
    dupes = np.flatnonzero(dirt["duplicate"])
    originals = np.flatnonzero(~dirt["duplicate"])[rng.integers(0, n - len(dupes), len(dupes))]
    for column in (rides["stamps"], fare, passengers, coords.T):
        column[dupes] = column[originals]
    # A missing row loses one of its seven columns.
    return np.where(dirt["missing"], rng.integers(0, len(contract.RAW_COLUMNS), n), -1)


def _block_table(seed: int, block: int) -> pa.Table:
    """All BLOCK_ROWS rows of one block, as an Arrow table with nulls for missing values."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    rides = _clean_rides(rng, BLOCK_ROWS)
    missing = _add_dirt(rng, rides)
    stamps = rides["stamps"].astype("int64")
    # Like the real keys: the pickup time, then a unique suffix (here the row number).
    rows = np.arange(block * BLOCK_ROWS, (block + 1) * BLOCK_ROWS)
    key = pc.binary_join_element_wise(
        stamp_text(pa.array(stamps, type=pa.timestamp("s"))),
        pc.utf8_lpad(pa.array(rows).cast(pa.string()), 7, "0"),
        ".",
    )
    values = [rides["fare"], stamps, *rides["coords"], rides["passengers"]]
    types = [pa.float64(), pa.timestamp("s", tz="UTC"), *[pa.float64()] * 4, pa.int16()]
    columns = [pa.array(column, type=kind, mask=missing == i) for i, (column, kind) in enumerate(zip(values, types))]
    return pa.table([key, *columns], names=list(contract.RAW_COLUMNS_WITH_KEY))


def iter_tables(start: int, stop: int, seed: int) -> Iterator[pa.Table]:
    """Arrow tables of rows [start, stop), block by block (nulls for missing values, UTC second stamps)."""
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start} and {stop}")
    for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        lo = max(start, block * BLOCK_ROWS) - block * BLOCK_ROWS
        hi = min(stop, (block + 1) * BLOCK_ROWS) - block * BLOCK_ROWS
        yield _block_table(seed, block).slice(lo, hi - lo)


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow rides to the raw DataFrame schema (nullable passenger_count, ns timestamps)."""
    stamps = table[contract.TIME_COLUMN].cast(pa.timestamp("ns", tz="UTC"))
    table = table.set_column(TIME_INDEX, contract.TIME_COLUMN, stamps)
    return table.to_pandas(types_mapper={pa.int16(): pd.Int16Dtype()}.get)


def iter_ride_blocks(n_rows: int, seed: int = DEFAULT_SEED, start_row: int = 0) -> Iterator[pd.DataFrame]:
    """Rows [start_row, start_row + n_rows) as DataFrames of at most BLOCK_ROWS rows."""
    for table in iter_tables(start_row, start_row + n_rows, seed):
        yield _to_frame(table)


def generate_rides(n_rows: int, seed: int = DEFAULT_SEED, start_row: int = 0) -> pd.DataFrame:
    """Rows [start_row, start_row + n_rows) in memory, index 0..n_rows-1."""
    frames = list(iter_ride_blocks(n_rows, seed, start_row))
    if not frames:
        return _to_frame(_block_table(seed, 0).slice(0, 0))
    return pd.concat(frames, ignore_index=True)
