"""Predict taxi fares from Python (notebooks, a web service) with the registry's model.

    from pipelines.predict_api import predict    # also `from pipelines.predict import predict`
    predict(pd.DataFrame([contract.EXAMPLE_RIDE]))      # -> array([fare])
    predict(rides, invalid="nan")                       # NaN for the rides the model cannot price

No Beam and no command line here: `python -m pipelines.predict` is the CLI
(pipelines/predict.py), Beam batch prediction `pipelines.batch_predict`.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from taxifare_core import contract
from taxifare_core.serving import prepare_rides
from taxifare_core.training import registry


class InvalidRideError(ValueError):
    """Rides the model cannot price; `reasons` maps each one's position to why."""

    def __init__(self, reasons: dict[int, str]):
        self.reasons = reasons
        shown = "; ".join(f"ride {i}: {why}" for i, why in list(reasons.items())[:5])
        more = f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else ""
        super().__init__(f"{len(reasons)} ride(s) cannot be priced: {shown}{more}")


class NonFiniteFareError(ValueError):
    """The model returned NaN or infinity for rides it should price: the model is broken."""


@functools.lru_cache(maxsize=4)
def _model_at(path: str):
    """The Keras model of one run folder, loaded once per process (failures are not cached)."""
    return registry.load_run_model(path)


def load_model(run: str | None = None, registry_dir: str | None = None):
    """The model of the named run or the latest one (cached).

    registry.NoModelError when none; registry.UnreadableModelError (a
    NoModelError) when its model.keras is empty or truncated, naming another run.
    """
    return _model_at(registry.run_path(run, registry_dir))


def predict(
    rides: pd.DataFrame, model=None, *, run: str | None = None, registry_dir: str | None = None, invalid: str = "raise"
) -> np.ndarray:
    """Fares (float64, one per ride, in order) for raw rides with the contract's columns (fare not needed).

    `model` defaults to the registry's latest run (or `run`). A ride the model
    cannot price raises InvalidRideError, or gets NaN with invalid="nan".
    NonFiniteFareError when the model itself answers NaN or infinity (a broken model).
    """
    if invalid not in ("raise", "nan"):
        raise ValueError(f"invalid must be 'raise' or 'nan', got {invalid!r}")
    prepared = prepare_rides(rides)
    bad = {i: why for i, why in enumerate(prepared.reasons) if why is not None}
    if bad and invalid == "raise":
        raise InvalidRideError(bad)
    fares = np.full(len(prepared.valid), np.nan)
    if prepared.valid.any():
        model = model if model is not None else load_model(run, registry_dir)
        priced = model.predict(prepared.features, verbose=0).reshape(-1)
        if not np.isfinite(priced).all():
            broken = np.flatnonzero(prepared.valid)[~np.isfinite(priced)]
            raise NonFiniteFareError(
                f"the model answers {priced[~np.isfinite(priced)][0]} for "
                f"{len(broken)} ride(s) (first: ride {broken[0]}): it is broken"
            )
        fares[prepared.valid] = priced
    return fares


def example_ride() -> pd.DataFrame:
    """The contract's example ride (section 6) as a one-row DataFrame."""
    return pd.DataFrame([contract.EXAMPLE_RIDE])
