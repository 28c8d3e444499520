"""Rides to predict -> the model's 65 features, with a clear reason for every ride the model cannot price.

A ride to price has no fare, so the contract's cleaning rules apply except the
fare's: the same parse (`parse_frame`), the same rules (`first_failed_rule`)
and the same features (`encode`) as preprocessing, so serving never disagrees
with training. Used by `pipelines.predict` and the Beam batch prediction.

    >>> batch = prepare_rides(pd.DataFrame([contract.EXAMPLE_RIDE]))
    >>> batch.features.shape, batch.reasons
    ((1, 65), [None])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from taxifare_core import contract
from taxifare_core.cleaning import first_failed_rule
from taxifare_core.features import encode
from taxifare_core.parsing import parse_frame

# Any fare the cleaning rules accept: it stands in for the unknown fare so only the other rules judge.
PLACEHOLDER_FARE = (contract.FARE_MIN_EXCLUSIVE + contract.FARE_MAX_EXCLUSIVE) / 2
SERVING_COLUMNS = tuple(column for column in contract.RAW_COLUMNS if column != contract.LABEL_COLUMN)

RULE_MESSAGES = {
    contract.RULE_MISSING: "a value is missing (" + ", ".join(SERVING_COLUMNS) + " are all needed)",
    contract.RULE_ZERO_COORDINATES: "all four coordinates are 0",
    contract.RULE_PASSENGER_COUNT: (
        f"passenger_count must be {contract.PASSENGER_MIN_EXCLUSIVE + 1} to {contract.PASSENGER_MAX_EXCLUSIVE - 1}"
    ),
    contract.RULE_LATITUDE: (
        f"outside New York: the model knows latitudes {contract.LATITUDE_MIN} to {contract.LATITUDE_MAX}"
    ),
    contract.RULE_LONGITUDE: (
        f"outside New York: the model knows longitudes {contract.LONGITUDE_MIN} to {contract.LONGITUDE_MAX}"
    ),
}


class PreparedRides(NamedTuple):
    """Features of the rides the model can price, which those are, and why the others are not."""

    features: np.ndarray  # float32 (n_valid, 65), in input order
    valid: np.ndarray  # bool (n,)
    reasons: list  # per input ride: None, or why it cannot be priced


def prepare_rides(rides: pd.DataFrame) -> PreparedRides:
    """Parse, validate and encode rides (raw text or typed columns; any fare column is ignored).

    Raises parsing.MalformedRecord when a needed column is absent altogether.
    """
    raw = rides.reset_index(drop=True).assign(**{contract.LABEL_COLUMN: PLACEHOLDER_FARE})
    typed, parse_reasons = parse_frame(raw)
    rules = first_failed_rule(typed)
    # Only the failed rows are looked at one by one: a batch of a million good rides costs no per-row Python.
    reasons = parse_reasons.to_numpy(dtype=object, copy=True)
    for row in np.flatnonzero((reasons == None) & (rules != None)).tolist():  # noqa: E711 - elementwise
        reasons[row] = RULE_MESSAGES[rules[row]]
    valid = reasons == None  # noqa: E711 - elementwise comparison on an object array
    return PreparedRides(encode(typed[valid]), valid, reasons.tolist())
