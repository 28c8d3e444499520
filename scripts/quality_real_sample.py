"""Quality benchmark on the real 8k-ride sample: the streaming trainer vs the linear baseline.

    .venv/bin/python scripts/quality_real_sample.py        # the trainer's defaults vs the contract's settings
    .venv/bin/python scripts/quality_real_sample.py --settings huber:0.001:5,mae:0.002:10 --seeds 5 \
        --output /tmp/quality.json                         # any LOSS:LEARNING_RATE:PATIENCE list

The sample is processed with the contract's own code (parse, clean, 65
features), sorted by pickup time and split chronologically: the oldest rides
train, the next `--val_share` validate (early stopping, "val" figures) and the
most recent `--test_share` are a test set no training decision saw. With ~7.8k
clean rides the contract's 2% would be ~160 rides, far too few for a stable
MAE, hence larger shares. Every setting runs `pipelines.train.run` (the real
trainer, shards on disk, registry in a temp folder) once per seed; the table
gives mean +- std over seeds for the model and the baseline (linear regression
of fare on manhattan distance, fitted on the same train rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from jobs import train_flags  # scripts/jobs.py, beside this script
from pipelines import train
from taxifare_core import cleaning, contract, features, parsing
from taxifare_core.training import registry
from taxifare_core.training.baseline import manhattan_km_of

# The trainer's defaults, then the contract's settings (CONTRACT.md section 5).
DEFAULT_SETTINGS = (
    f"{train.DEFAULT_LOSS}:{train.DEFAULT_LEARNING_RATE}:{train.DEFAULT_PATIENCE},"
    f"mse:{contract.LEARNING_RATE}:{contract.PATIENCE}"
)
DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyc_taxi_fare_sample_8k.csv"


def processed_sample(path: Path) -> np.ndarray:
    """The sample's clean rides as processed rows (65 features + fare), oldest first."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    typed, reasons = parsing.parse_frame(raw)
    kept = cleaning.clean(typed[reasons.isna()]).kept
    kept = kept.sort_values(contract.TIME_COLUMN, kind="stable")
    return features.processed_rows(kept)


def write_shard(path: Path, rows: np.ndarray) -> None:
    """One processed CSV shard."""
    path.write_text(features.format_csv(rows) + "\n")


def score(predicted: np.ndarray, fares: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(predicted.reshape(-1).astype(np.float64) - fares.astype(np.float64))))


def run_setting(
    folder: Path, loss: str, learning_rate: float, patience: int, seed: int, max_epochs: int, test: np.ndarray
) -> dict:
    """Train once with the real trainer; model and baseline MAE on val and test."""
    registry_dir = folder / "registry"
    args = train.parse_args(
        [
            *train_flags(folder, registry_dir),
            "--loss",
            loss,
            "--learning_rate",
            str(learning_rate),
            "--patience",
            str(patience),
            "--seed",
            str(seed),
            "--max_epochs_per_chunk",
            str(max_epochs),
        ]
    )
    metrics = train.run(args)
    model = registry.load_model(metrics["run"], str(registry_dir))
    test_x, test_y = test[:, :-1], test[:, -1]
    baseline_test = metrics["baseline_intercept"] + metrics["baseline_slope_per_km"] * manhattan_km_of(test_x)
    return {
        "loss": loss,
        "learning_rate": learning_rate,
        "patience": patience,
        "seed": seed,
        "epochs": metrics["epochs"],
        "val_mae": metrics["val_mae"],
        "baseline_val_mae": metrics["baseline_mae"],
        "test_mae": score(model.predict(test_x, verbose=0), test_y),
        "baseline_test_mae": score(baseline_test, test_y),
    }


def summary_table(results: list[dict]) -> str:
    """Markdown table: mean +- std over seeds per setting, and in how many seeds the model beat the baseline."""
    frame = pd.DataFrame(results)
    lines = [
        "| loss | learning rate | patience | epochs | val MAE | baseline val | test MAE | baseline test "
        "| seeds beating baseline (val / test) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (loss, rate, patience), group in frame.groupby(["loss", "learning_rate", "patience"], sort=False):
        cell = {
            c: f"{group[c].mean():.3f} +- {group[c].std(ddof=0):.3f}"
            for c in ("val_mae", "test_mae", "baseline_val_mae", "baseline_test_mae")
        }
        wins_val = int((group["val_mae"] < group["baseline_val_mae"]).sum())
        wins_test = int((group["test_mae"] < group["baseline_test_mae"]).sum())
        lines.append(
            f"| {loss} | {rate:g} | {patience} | {group['epochs'].mean():.0f} | {cell['val_mae']} | "
            f"{cell['baseline_val_mae']} | {cell['test_mae']} | {cell['baseline_test_mae']} | "
            f"{wins_val}/{len(group)} / {wins_test}/{len(group)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Process the sample, train every setting x seed, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="the real rides CSV")
    parser.add_argument("--val_share", type=float, default=0.15, help="share of rides for validation")
    parser.add_argument("--test_share", type=float, default=0.15, help="most recent share kept for test")
    parser.add_argument(
        "--settings", default=DEFAULT_SETTINGS, help="comma-separated LOSS:LEARNING_RATE:PATIENCE to compare"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting (0..N-1)")
    parser.add_argument(
        "--max_epochs", type=int, default=train.DEFAULT_MAX_EPOCHS_PER_CHUNK, help="epoch cap (the sample is one chunk)"
    )
    parser.add_argument("--output", type=Path, default=None, help="write every result as JSON here")
    args = parser.parse_args(argv)
    if not args.sample.exists():
        print(f"error: sample not found: {args.sample}", file=sys.stderr)
        return 2

    rows = processed_sample(args.sample)
    n_test, n_val = round(len(rows) * args.test_share), round(len(rows) * args.val_share)
    train_rows, val_rows, test_rows = np.split(rows, [len(rows) - n_test - n_val, len(rows) - n_test])
    print(
        f"{len(rows):,} clean rides: train {len(train_rows):,}, val {len(val_rows):,}, "
        f"test {len(test_rows):,} (chronological)",
        flush=True,
    )
    settings = [
        (loss, float(rate), int(patience), seed)
        for loss, rate, patience in (item.split(":") for item in args.settings.split(","))
        for seed in range(args.seeds)
    ]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_shard(folder / "train-00000-of-00001.csv", train_rows)
        write_shard(folder / "val-00000-of-00001.csv", val_rows)
        for loss, rate, patience, seed in settings:
            result = run_setting(folder, loss, rate, patience, seed, args.max_epochs, test_rows)
            results.append(result)
            print(f"RESULT {json.dumps(result)}", flush=True)
            if args.output:
                args.output.write_text(json.dumps(results, indent=2))
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
