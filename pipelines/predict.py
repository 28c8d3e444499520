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

This module is the command line: the fares come from `pipelines.predict_api` (the
Python API, also importable here: `from pipelines.predict import predict`), batch
prediction runs `pipelines.batch_predict`, and its Dataflow dry run is built by
`pipelines.cloud.predict_dry_run`.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from pipelines import progress
from pipelines.cli import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    UsageError,
    entry_point,
    on_interrupt,
    report_usage_error,
    writes_to,
)
from pipelines.predict_api import InvalidRideError, NonFiniteFareError, example_ride, predict
from taxifare_core import contract, storage
from taxifare_core.parsing import MalformedRecord
from taxifare_core.serving import SERVING_COLUMNS
from taxifare_core.training import registry

PROG = "python -m pipelines.predict"
# Text, read by the contract's parser as every other path reads it (float() would take "٤٠.٧").
RIDE_FLAGS = {
    contract.TIME_COLUMN: (str, 'pickup time in UTC, e.g. "2013-07-06 17:18:00 UTC"'),
    "pickup_longitude": (str, "pickup longitude (degrees)"),
    "pickup_latitude": (str, "pickup latitude (degrees)"),
    "dropoff_longitude": (str, "dropoff longitude (degrees)"),
    "dropoff_latitude": (str, "dropoff latitude (degrees)"),
    contract.PASSENGER_COLUMN: (str, "number of passengers (1 to 7)"),
}
assert tuple(RIDE_FLAGS) == SERVING_COLUMNS


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Predict taxi fares with the production (or a named) model of the registry.",
        formatter_class=DefaultsHelpFormatter,
        epilog="With no ride flags and no --input, predicts the contract's example ride. "
        "In batch mode, unknown flags are passed to Beam (e.g. --runner).",
    )
    ride = parser.add_argument_group("one ride (give all six)")
    for name, (kind, text) in RIDE_FLAGS.items():
        ride.add_argument(f"--{name}", type=kind, default=None, help=text)
    batch = parser.add_argument_group("batch prediction (Beam)")
    batch.add_argument(
        "--input",
        default=None,
        metavar="GLOB",
        help="raw ride CSVs with a header (local or gs://); `key` column optional",
    )
    batch.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="folder for predictions-*.csv (key,fare_pred) and dead_letter-*.csv",
    )
    batch.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --output that holds no output of this project: the run is "
        "written beside those files, which are never removed (default: refused, exit code 2)",
    )
    parser.add_argument(
        "--registry", default=str(contract.local_registry_path()), help="model registry folder (local or gs://)"
    )
    parser.add_argument("--run", default=None, help="run folder name to use (default: the production run)")
    batch.add_argument(
        "--quiet",
        action="store_true",
        help="no progress line (default on local runs: one at least every 10 s on stderr, bytes read, rate, ETA)",
    )
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
        from pipelines.runners import check_beam_flags, pipeline_options

        check_beam_flags(pipeline_options(beam_args), vars(args))  # Beam would only log them and run anyway
        writes_to(args.output)
        on_interrupt(lambda: f"{args.output} keeps its last published run")
        progress.set_quiet(args.quiet)
        batch_predict.run(args.input, args.output, args.run, args.registry, beam_args, force=args.force)
        return 0
    except (UsageError, registry.NoModelError, storage.StorageError) as error:
        return report_usage_error(PROG, error)


if __name__ == "__main__":
    sys.exit(main())
