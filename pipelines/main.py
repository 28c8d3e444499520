"""The main job, end to end on the embedded default data: `make run`.

    python -m pipelines.main

1. generates the embedded sample of raw rides once (seeded, with real-world dirt),
2. preprocesses it with the Beam pipeline (DirectRunner) into train/val shards,
3. trains the Keras model on those shards, chunk by chunk, into the registry; a run
   that beats the baseline and the production model is blessed and promoted,
4. predicts the contract's example ride with the new model,
and ends with one summary: rows, model MAE vs the baseline, the predicted fare
and where everything was written. Each step is also its own command
(`make sample`, `make preprocess`, `make train`, `make predict`).
"""

from __future__ import annotations

import argparse
import sys

from pipelines import predict, preprocess, train
from pipelines.cli import OneLineErrorParser, UsageError, entry_point
from taxifare_core import contract
from taxifare_core.default_sample import ensure_default_sample
from taxifare_core.storage import outputs
from taxifare_core.training import registry


def _step(title: str) -> None:
    """A visible header for each stage of the job."""
    print(f"\n=== {title} ===", flush=True)


@entry_point("python -m pipelines.main")
def main(argv: list[str] | None = None) -> int:
    """Run the four stages and print the closing summary (--help says what they are; no other flag)."""
    OneLineErrorParser(
        prog="python -m pipelines.main",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="It takes no flags; each stage's own command has them (python -m pipelines.preprocess --help, ...)",
    ).parse_args(argv or [])
    _step("1/4 sample: the embedded default rides")
    raw_glob = ensure_default_sample()
    print(f"raw rides: {raw_glob}")

    _step("2/4 preprocess: Beam pipeline, raw rides -> processed shards")
    # No flags: the embedded sample into its default folder, the one `train` reads by default.
    status = preprocess.main([])
    if status != 0:
        return status
    processed = train.default_processed_dir()
    summary = registry.read_json(f"{processed}/summary.json")

    _step("3/4 train: streaming the shards into the Keras model")
    try:
        metrics = train.run(train.parse_args([]))
    except UsageError as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2

    _step("4/4 predict: the contract's example ride")
    fare = float(predict.predict(predict.example_ride(), run=metrics["run"])[0])
    ride = contract.EXAMPLE_RIDE
    print(
        f"{ride['pickup_datetime']} from ({ride['pickup_latitude']}, {ride['pickup_longitude']}) "
        f"to ({ride['dropoff_latitude']}, {ride['dropoff_longitude']}): ${fare:.2f}"
    )

    print("\n=== summary ===")
    print(
        f"rides read           {summary['rows_read']:,} ({summary['bad_input']:,} bad input, "
        f"{summary['dropped_total']:,} dropped by the date window and cleaning rules, "
        f"{summary['duplicates']:,} duplicates)"
    )
    print(
        f"train / val rows     {summary['train_rows']:,} / {summary['val_rows']:,} "
        f"(preprocessed in {summary['seconds']:.1f} s, dedupe {summary['dedupe']})"
    )
    print(
        f"model val MAE        ${metrics['val_mae']:.2f}  vs  baseline ${metrics['baseline_mae']:.2f} "
        f"(linear fare ~ manhattan distance)"
    )
    if metrics["promoted"]:
        print(f"model lifecycle      blessed and promoted: run {metrics['run']} is in production")
    else:
        verdict = "blessed but not promoted" if metrics["blessed"] else "not blessed"
        stays = f"production stays run {metrics['production']}" if metrics["production"] else "no production run"
        print(f"model lifecycle      {verdict} ({'; '.join(metrics['reasons'])}); {stays}")
    print(f"example ride fare    ${fare:.2f}")
    print(f"raw rides            {raw_glob}")
    print(f"processed shards     {processed}/")
    print(f"data report          {outputs.published_path(f'{processed}/report.html')}")
    print(f"model and its curve  {registry.run_path(metrics['run'])}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
