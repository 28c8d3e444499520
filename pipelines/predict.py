"""Predict taxi fares with the registry's model: one ride, the example ride, or a batch of files.

    python -m pipelines.predict                                  # the contract's example ride
    python -m pipelines.predict --pickup_datetime "2013-07-06 17:18:00 UTC" \
        --pickup_longitude -73.950655 --pickup_latitude 40.783282 \
        --dropoff_longitude -73.984365 --dropoff_latitude 40.769802 --passenger_count 1
    python -m pipelines.predict --input 'rides-*.csv' --output /tmp/predictions   # Beam batch job
    python -m pipelines.predict --run 20261126T091500.123456Z --registry gs://bucket/training_outputs

A ride the model cannot price (outside New York, a bad passenger count, an
unreadable time) gets a clear message and exit code 2, never a number.
Extra flags in batch mode go to Beam (e.g. --runner DataflowRunner --project P).

From Python (notebooks, a web service):

    >>> from pipelines.predict import predict
    >>> predict(pd.DataFrame([contract.EXAMPLE_RIDE]))      # -> array([fare])
"""
from __future__ import annotations

import argparse
import functools
import sys

import numpy as np
import pandas as pd

from pipelines.cli import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    UsageError,
    entry_point,
    on_interrupt,
    report_usage_error,
    writes_to,
)
from taxifare_core import contract, storage
from taxifare_core.parsing import MalformedRecord
from taxifare_core.serving import SERVING_COLUMNS, prepare_rides
from taxifare_core.training import registry

PROG = "python -m pipelines.predict"
RIDE_FLAGS = {
    contract.TIME_COLUMN: (str, 'pickup time in UTC, e.g. "2013-07-06 17:18:00 UTC"'),
    "pickup_longitude": (float, "pickup longitude (degrees)"),
    "pickup_latitude": (float, "pickup latitude (degrees)"),
    "dropoff_longitude": (float, "dropoff longitude (degrees)"),
    "dropoff_latitude": (float, "dropoff latitude (degrees)"),
    contract.PASSENGER_COLUMN: (str, "number of passengers (1 to 7)"),
}
assert tuple(RIDE_FLAGS) == SERVING_COLUMNS


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


def predict(rides: pd.DataFrame, model=None, *, run: str | None = None, registry_dir: str | None = None,
            invalid: str = "raise") -> np.ndarray:
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
            raise NonFiniteFareError(f"the model answers {priced[~np.isfinite(priced)][0]} for "
                                     f"{len(broken)} ride(s) (first: ride {broken[0]}): it is broken")
        fares[prepared.valid] = priced
    return fares


def example_ride() -> pd.DataFrame:
    """The contract's example ride (section 6) as a one-row DataFrame."""
    return pd.DataFrame([contract.EXAMPLE_RIDE])


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Predict taxi fares with the latest (or a named) model of the registry.",
        formatter_class=DefaultsHelpFormatter,
        epilog="With no ride flags and no --input, predicts the contract's example ride. "
               "In batch mode, unknown flags are passed to Beam (e.g. --runner).",
    )
    ride = parser.add_argument_group("one ride (give all six)")
    for name, (kind, text) in RIDE_FLAGS.items():
        ride.add_argument(f"--{name}", type=kind, default=None, help=text)
    batch = parser.add_argument_group("batch prediction (Beam)")
    batch.add_argument("--input", default=None, metavar="GLOB",
                       help="raw ride CSVs with a header (local or gs://); `key` column optional")
    batch.add_argument("--output", default=None, metavar="DIR",
                       help="folder for predictions-*.csv (key,fare_pred) and dead_letter-*.csv")
    parser.add_argument("--registry", default=str(contract.local_registry_path()),
                        help="model registry folder (local or gs://)")
    parser.add_argument("--run", default=None, help="run folder name to use (default: the latest)")
    return parser


def _ride_from_flags(args: argparse.Namespace) -> pd.DataFrame | None:
    """The ride given by flags, None when no ride flag is set; UsageError when only some are."""
    given = {name: getattr(args, name) for name in RIDE_FLAGS if getattr(args, name) is not None}
    if not given:
        return None
    missing = [f"--{name}" for name in RIDE_FLAGS if name not in given]
    if missing:
        raise UsageError(f"a ride needs all six flags; missing {', '.join(missing)}")
    return pd.DataFrame([given])


def _predict_one(args: argparse.Namespace) -> int:
    """Predict the flagged (or example) ride and print its fare."""
    ride = _ride_from_flags(args)
    label = "the example ride" if ride is None else "this ride"
    ride = example_ride() if ride is None else ride
    try:
        [fare] = predict(ride, run=args.run, registry_dir=args.registry)
    except InvalidRideError as error:
        raise UsageError(f"cannot price {label}: {error.reasons[0]}") from None
    except MalformedRecord as error:
        raise UsageError(f"cannot price {label}: {error.reason}") from None
    except NonFiniteFareError:
        run_dir = registry.run_path(args.run, args.registry)
        raise UsageError(_broken_model_message(run_dir)) from None
    name = registry.run_path(args.run, args.registry).rstrip("/").rsplit("/", 1)[-1]
    summary = ", ".join(f"{column}={ride.iloc[0][column]}" for column in SERVING_COLUMNS)
    print(f"predicted fare for {label} ({summary}): ${fare:.2f}  [model {name}]")
    return 0


def _broken_model_message(run_dir: str) -> str:
    """One line for a model that prices rides as NaN: which run, and another to use if any."""
    root, name = run_dir.rstrip("/").rsplit("/", 1)
    others = [other for other in reversed(registry.run_names(root)) if other != name]
    hint = f"use --run {others[0]}" if others else "train a new one"
    return f"the model of run {name} answers NaN or infinity instead of a fare: {hint}"


@entry_point(PROG)
def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line errors with exit code 2 (Ctrl-C, SIGTERM, a full disk: see pipelines.cli)."""
    args, beam_args = build_parser().parse_known_args(argv)
    try:
        if args.input is None and args.output is None:
            if beam_args:
                raise UsageError(f"unrecognized arguments: {' '.join(beam_args)}")
            return _predict_one(args)
        if args.input is None or args.output is None:
            raise UsageError("batch prediction needs both --input GLOB and --output DIR")
        if _ride_from_flags(args) is not None:
            raise UsageError("give either ride flags or --input/--output, not both")
        from pipelines import batch_predict
        from pipelines.preprocessing.options import check_flags

        check_flags(beam_args)  # Beam would only log unknown flags and run anyway
        writes_to(args.output)
        on_interrupt(lambda: f"{args.output} keeps its last published run")
        batch_predict.run(args.input, args.output, args.run, args.registry, beam_args)
        return 0
    except (UsageError, registry.NoModelError, storage.StorageError) as error:
        return report_usage_error(PROG, error)


def build_predict_dry_run_job(argv: list[str]):
    """Build the real Dataflow job of `python -m pipelines.predict argv` without submitting it.

    Offline as build_dry_run_job: the input, output and registry are not touched, so
    the run must be named (`--run`; finding the latest one would list the registry).
    """
    import apache_beam as beam  # Beam only for batch prediction: one ride never imports it

    from pipelines import batch_predict
    from pipelines.cloud import dataflow

    args, beam_args = build_parser().parse_known_args(argv)
    options = dataflow.dry_run_options(beam_args)
    if not (args.input and args.output):
        raise dataflow.DataflowError("batch prediction needs --input GLOB and --output DIR")
    if not args.run:
        raise dataflow.DataflowError("a dry run of batch prediction needs --run NAME (the latest run is only "
                            "found by listing the registry, which a dry run does not touch)")
    model_uri = storage.join(registry.registry_root(args.registry), args.run, registry.MODEL_FILE)
    pipeline = beam.Pipeline(options=options)
    batch_predict.build_predict(pipeline, args.input, args.output, model_uri, name_by_file=True)
    return pipeline.run().job


if __name__ == "__main__":
    sys.exit(main())
