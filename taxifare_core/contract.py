"""The taxifare data contract (see CONTRACT.md): the one home of every constant.

Columns, dtypes, cleaning bounds, feature names, districts, scaling constants,
the BigQuery query, the model's settings and the default local paths all live
here; every other module imports them instead of repeating a literal.

    >>> from taxifare_core import contract
    >>> len(contract.FEATURE_NAMES), contract.PROCESSED_COLUMNS[-1]
    (65, 'fare_amount')
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

# --- raw rides -------------------------------------------------------------

KEY_COLUMN = "key"
LABEL_COLUMN = "fare_amount"
TIME_COLUMN = "pickup_datetime"
COORDINATE_COLUMNS = (
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
)
PASSENGER_COLUMN = "passenger_count"
# The seven columns of the BigQuery query, in its order; `key` is optional.
RAW_COLUMNS = (LABEL_COLUMN, TIME_COLUMN, *COORDINATE_COLUMNS, PASSENGER_COLUMN)
RAW_COLUMNS_WITH_KEY = (KEY_COLUMN, *RAW_COLUMNS)
NUMERIC_COLUMNS = (LABEL_COLUMN, *COORDINATE_COLUMNS, PASSENGER_COLUMN)
RAW_DTYPES = {
    KEY_COLUMN: "string",
    LABEL_COLUMN: "float32",
    TIME_COLUMN: "datetime64[ns, UTC]",
    "pickup_longitude": "float32",
    "pickup_latitude": "float32",
    "dropoff_longitude": "float32",
    "dropoff_latitude": "float32",
    PASSENGER_COLUMN: "int16",
}
# CSV form of a timestamp, e.g. "2013-07-06 17:18:00 UTC".
CSV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"

# --- BigQuery --------------------------------------------------------------

BQ_PROJECT = "wagon-public-datasets"
BQ_DATASET = "taxifare"
DATA_SIZES = ("1k", "200k", "all")
DEFAULT_DATA_SIZE = "1k"
DEFAULT_MIN_DATE = "2009-01-01"
DEFAULT_MAX_DATE = "2015-01-01"
QUERY_TEMPLATE = """SELECT {columns}
FROM `{project}`.{dataset}.raw_{data_size}
WHERE pickup_datetime BETWEEN '{min_date}' AND '{max_date}'
ORDER BY pickup_datetime"""

# --- cleaning rules (CONTRACT.md section 2), in the contract's order --------

RULE_DUPLICATE = "duplicate"
RULE_MISSING = "missing_value"
RULE_ZERO_COORDINATES = "zero_coordinates"
RULE_PASSENGER_COUNT = "passenger_count_out_of_range"
RULE_FARE = "fare_out_of_range"
RULE_LATITUDE = "latitude_out_of_range"
RULE_LONGITUDE = "longitude_out_of_range"
# Per-row rules (everything but duplicates), checked in this order: a dropped
# row is reported under the first rule it fails.
ROW_RULES = (
    RULE_MISSING,
    RULE_ZERO_COORDINATES,
    RULE_PASSENGER_COUNT,
    RULE_FARE,
    RULE_LATITUDE,
    RULE_LONGITUDE,
)
CLEANING_RULES = (RULE_DUPLICATE, *ROW_RULES)

PASSENGER_MIN_EXCLUSIVE, PASSENGER_MAX_EXCLUSIVE = 0, 8
FARE_MIN_EXCLUSIVE, FARE_MAX_EXCLUSIVE = 0.0, 400.0
LATITUDE_MIN, LATITUDE_MAX = 40.5, 40.9  # inclusive
LONGITUDE_MIN, LONGITUDE_MAX = -74.3, -73.7  # inclusive

# --- features (CONTRACT.md section 3) --------------------------------------

LOCAL_TIMEZONE = "America/New_York"
TIME_ORIGIN = datetime(2009, 1, 1, tzinfo=UTC)
DAYS_SCALE = 2090.0
DISTANCE_SCALE_KM = 100.0
EARTH_RADIUS_KM = 6371.0
PASSENGER_SCALE = 7.0
GEOHASH_PRECISION = 5
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
DISTRICTS = (
    "dr5ru", "dr5rs", "dr5rv", "dr72h", "dr72j", "dr5re", "dr5rk", "dr5rz", "dr5ry", "dr5rt",
    "dr5rg", "dr5x1", "dr5x0", "dr72m", "dr5rm", "dr5rx", "dr5x2", "dr5rw", "dr5rh", "dr5x8",
)  # fmt: skip
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

FEATURE_NAMES = (
    "passenger_count_scaled",
    *(f"weekday_{d}" for d in WEEKDAYS),
    *(f"month_{m}" for m in MONTHS),
    "days_since_2009_scaled",
    "hour_sin",
    "hour_cos",
    "haversine_km_scaled",
    "manhattan_km_scaled",
    *(f"pickup_{g}" for g in DISTRICTS),
    *(f"dropoff_{g}" for g in DISTRICTS),
)
N_FEATURES = len(FEATURE_NAMES)
assert N_FEATURES == 65, N_FEATURES
# Bump when `features.encode` changes what a column means without changing its name:
# a model trained before is then refused (taxifare_core.training.registry.feature_contract_hash).
FEATURE_ENCODING_VERSION = 1
PROCESSED_COLUMNS = (*FEATURE_NAMES, LABEL_COLUMN)
N_PROCESSED_COLUMNS = len(PROCESSED_COLUMNS)
# Column slices of the feature matrix, for readers and tests.
COL_PASSENGERS = 0
COLS_WEEKDAY = slice(1, 8)
COLS_MONTH = slice(8, 20)
COL_DAYS = 20
COL_HOUR_SIN, COL_HOUR_COS = 21, 22
COL_HAVERSINE, COL_MANHATTAN = 23, 24
COLS_PICKUP_DISTRICT = slice(25, 45)
COLS_DROPOFF_DISTRICT = slice(45, 65)
# A processed value is correct within this tolerance (CONTRACT.md section 4).
PROCESSED_TOLERANCE = 1e-3

# --- the model (CONTRACT.md section 5) -------------------------------------

MODEL_L2 = 0.005
MODEL_BN_MOMENTUM = 0.9
MODEL_DROPOUT = 0.1
MODEL_UNITS = (100, 50)
LEARNING_RATE = 0.0005
BATCH_SIZE = 256
PATIENCE = 2
VALIDATION_SHARE = 0.02

# --- the example ride (CONTRACT.md section 6) ------------------------------

EXAMPLE_RIDE = {
    TIME_COLUMN: "2013-07-06 17:18:00 UTC",
    "pickup_longitude": -73.950655,
    "pickup_latitude": 40.783282,
    "dropoff_longitude": -73.984365,
    "dropoff_latitude": 40.769802,
    PASSENGER_COLUMN: 1,
}

# --- local paths (the origin course's layout, movable by environment) ------


def local_data_path() -> Path:
    """Root of local data: $LOCAL_DATA_PATH or ~/.lewagon/mlops/data."""
    return Path(os.environ.get("LOCAL_DATA_PATH", "~/.lewagon/mlops/data")).expanduser()


def local_registry_path() -> Path:
    """Root of training outputs: $LOCAL_REGISTRY_PATH or ~/.lewagon/mlops/training_outputs."""
    return Path(os.environ.get("LOCAL_REGISTRY_PATH", "~/.lewagon/mlops/training_outputs")).expanduser()


def processed_dir_name(min_date: str, max_date: str, data_size: str) -> str:
    """Folder name of one preprocessing run's output, as the origin course names it."""
    return f"processed_{min_date}_{max_date}_{data_size}"
