"""Training and serving know their data: the trainer copies stats.json, batch prediction scores skew against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import batch_predict, train
from shard_helpers import processed_rows, saved_tiny_model, train_flags, write_shards
from taxifare_core import contract, generate, stats
from taxifare_core.storage import outputs
from taxifare_core.training import registry

pytestmark = [pytest.mark.slow]


def stats_json(rows: np.ndarray, val_rows: np.ndarray) -> str:
    splits = {
        "train": stats.finalize(stats.batch_accumulator(rows)),
        "val": stats.finalize(stats.batch_accumulator(val_rows)),
    }
    return json.dumps({"splits": splits})


@pytest.mark.parametrize("with_stats", [True, False])
def test_trainer_copies_the_shards_stats_into_the_run_and_names_it(tmp_path, with_stats):
    folder = tmp_path / "processed"
    rows = processed_rows(300, seed=3)
    write_shards(folder, rows[:240], [240], prefix="train")
    write_shards(folder, rows[240:], [60], prefix="val")
    if with_stats:
        (folder / "stats.json").write_text(stats_json(rows[:240], rows[240:]))
    metrics = train.run(
        train.parse_args(
            [
                *train_flags(folder, tmp_path / "registry"),
                "--chunk_size",
                "240",
                "--batch_size",
                "64",
                "--max_epochs_per_chunk",
                "1",
                "--seed",
                "1",
            ]
        )
    )
    run_dir = Path(registry.run_path(metrics["run"], str(tmp_path / "registry")))
    saved = json.loads((run_dir / registry.METRICS_FILE).read_text())
    if with_stats:
        assert saved["data_stats"] == "stats.json"
        assert (run_dir / "stats.json").read_text() == (folder / "stats.json").read_text()
    else:
        assert saved["data_stats"] is None and not (run_dir / "stats.json").exists()


def write_rides(path: Path, n_rows: int, seed: int, passengers: int | None = None) -> None:
    rides = generate.generate_rides(n_rows, seed=seed).dropna()
    if passengers is not None:
        rides[contract.PASSENGER_COLUMN] = passengers
    rides[contract.TIME_COLUMN] = rides[contract.TIME_COLUMN].dt.strftime(contract.CSV_TIME_FORMAT)
    path.parent.mkdir(parents=True, exist_ok=True)
    rides.to_csv(path, index=False)


@pytest.fixture(scope="module")
def model_with_stats(tmp_path_factory) -> str:
    """A tiny model whose run folder holds the statistics of 4,000 generated training rows; the registry root."""
    root = tmp_path_factory.mktemp("registry")
    _, run_dir = saved_tiny_model(root, 200, seed=5, model_seed=1)
    rows = processed_rows(4000, seed=21)
    Path(run_dir, "stats.json").write_text(stats_json(rows[:3600], rows[3600:]))
    return str(root)


@pytest.mark.parametrize("passengers, flagged", [(None, []), (6, ["passenger_count_scaled"])])
def test_batch_prediction_writes_statistics_and_skew_against_the_training_rows(
    tmp_path, model_with_stats, passengers, flagged
):
    write_rides(tmp_path / "in" / "rides.csv", 3000, seed=8, passengers=passengers)
    summary = batch_predict.run(str(tmp_path / "in" / "*.csv"), str(tmp_path / "out"), registry_dir=model_with_stats)
    payload = json.loads(Path(outputs.published_path(str(tmp_path / "out" / "stats.json"))).read_text())
    predicted = payload["splits"]["predicted"]
    assert predicted["rows"] == summary["predicted"] > 2500
    assert [c["name"] for c in predicted["columns"]] == list(contract.FEATURE_NAMES)  # no fare to predict from
    skew = payload["drift"]
    assert skew == summary["skew"] and skew["reference"].endswith("stats.json (train)")
    assert "fare_amount" not in skew["scores"]
    assert skew["flagged"] == flagged, skew["scores"]
    assert not (tmp_path / "out" / "stats-pipeline.json").exists()


def test_batch_prediction_without_training_statistics_scores_no_skew(tmp_path):
    saved_tiny_model(tmp_path / "registry", 100, seed=5, model_seed=1)
    write_rides(tmp_path / "in" / "rides.csv", 200, seed=8)
    summary = batch_predict.run(
        str(tmp_path / "in" / "*.csv"), str(tmp_path / "out"), registry_dir=str(tmp_path / "registry")
    )
    assert summary["skew"] is None
    assert (
        json.loads(Path(outputs.published_path(str(tmp_path / "out" / "stats.json"))).read_text())["splits"][
            "predicted"
        ]["rows"]
        > 150
    )
