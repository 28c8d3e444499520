"""The streaming trainer: incremental learning, chunking, resume, baseline, registry output, CLI errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines import train
from shard_helpers import processed_rows, train_flags, write_shards
from taxifare_core.training import registry
from taxifare_core.training.baseline import RunningLinearFit, manhattan_km_of

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """450 train rows in 3 uneven shards, 120 val rows in 2 shards."""
    folder = tmp_path_factory.mktemp("processed")
    rows = processed_rows(570, seed=11)
    write_shards(folder, rows[:450], [200, 130, 120], prefix="train")
    write_shards(folder, rows[450:], [60, 60], prefix="val")
    return {"folder": folder, "train_rows": rows[:450], "val_rows": rows[450:]}


def _args(data, registry_dir: Path, *extra: str):
    return train.parse_args(
        [
            *train_flags(data["folder"], registry_dir),
            "--chunk_size",
            "100",
            "--batch_size",
            "32",
            "--max_epochs_per_chunk",
            "2",
            "--seed",
            "5",
            *extra,
        ]
    )


def _weights(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class _Interrupted(Exception):
    """Stands for a crash or Ctrl-C in the middle of a run."""


def test_chunks_follow_chunk_size_and_training_continues(data, tmp_path):
    seen = []

    def record(stage, chunk, model):
        seen.append((stage, chunk, id(model), _weights(model)))

    metrics = train.run(_args(data, tmp_path), on_chunk=record)
    # 450 rows in 3 shards at 100 rows per chunk: 5 chunks, not 3.
    assert metrics["chunks"] == 5 and metrics["rows"] == 450
    assert [entry["rows"] for entry in metrics["history"]] == [100, 100, 100, 100, 50]
    assert [(stage, chunk) for stage, chunk, _, _ in seen] == [
        (stage, chunk) for chunk in range(1, 6) for stage in ("start", "end")
    ]
    assert len({model_id for _, _, model_id, _ in seen}) == 1
    ends = {chunk: w for stage, chunk, _, w in seen if stage == "end"}
    starts = {chunk: w for stage, chunk, _, w in seen if stage == "start"}
    for chunk in range(2, 6):
        assert _same(starts[chunk], ends[chunk - 1]), f"chunk {chunk} did not start from chunk {chunk - 1}"
    assert not _same(starts[1], ends[1])
    assert not _same(starts[2], starts[1])


def test_run_is_saved_in_the_registry(data, tmp_path):
    metrics = train.run(_args(data, tmp_path))
    run_dir = tmp_path / metrics["run"]
    assert registry.run_names(str(tmp_path)) == [metrics["run"]]
    saved = json.loads((run_dir / registry.METRICS_FILE).read_text())
    for key in ("val_mae", "val_rmse", "baseline_mae", "rows", "chunks", "seconds", "train_data", "val_data"):
        assert key in saved, key
    assert saved["val_rows"] == 120 and saved["train_data"].endswith("train-*.csv")
    params = json.loads((run_dir / registry.PARAMS_FILE).read_text())
    assert params["chunk_size"] == 100 and params["loss"] == train.DEFAULT_LOSS and params["incremental"] is True
    assert (run_dir / registry.CURVE_FILE).read_bytes().startswith(b"\x89PNG")
    assert not (run_dir / registry.CHECKPOINT_DIR).exists()
    for entry in saved["history"]:  # every epoch's MAEs, the kept (best val loss) epoch's in the chunk's line
        assert len(entry["epoch_train_mae"]) == len(entry["epoch_val_mae"]) == entry["epochs"]
        kept = entry["best_epoch"] - 1
        assert entry["val_mae"] == entry["epoch_val_mae"][kept] and entry["train_mae"] == entry["epoch_train_mae"][kept]

    model = registry.load_model(metrics["run"], registry=str(tmp_path))
    val_x, val_y = data["val_rows"][:, :-1], data["val_rows"][:, -1]
    mae = float(np.mean(np.abs(model.predict(val_x, verbose=0).reshape(-1) - val_y)))
    assert mae == pytest.approx(saved["val_mae"], rel=1e-3)


def test_a_long_chunk_prints_epoch_lines_and_quiet_prints_none(data, tmp_path, capsys, monkeypatch):
    from pipelines import progress

    monkeypatch.setattr(progress, "DEFAULT_EVERY_SECONDS", 0.0)  # every epoch counts as "long"
    train.run(_args(data, tmp_path / "loud", "--max_epochs_per_chunk", "3", "--patience", "5"))
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if ", epoch " in line]
    assert len(epoch_lines) == 5 * 3  # 5 chunks of 3 epochs (patience 5: none stops early)
    for line in epoch_lines:
        assert re.fullmatch(r"  chunk [1-5], epoch [123]: val MAE \d+\.\d{3} \(\d+ s into the chunk\)", line), line
    train.run(_args(data, tmp_path / "quiet", "--max_epochs_per_chunk", "3", "--quiet"))
    assert ", epoch " not in capsys.readouterr().out


def test_baseline_is_the_least_squares_line_of_the_train_rows(data, tmp_path):
    metrics = train.run(_args(data, tmp_path, "--max_epochs_per_chunk", "1"))
    x, y = manhattan_km_of(data["train_rows"][:, :-1]), data["train_rows"][:, -1].astype(np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    assert metrics["baseline_slope_per_km"] == pytest.approx(slope, rel=1e-4)
    assert metrics["baseline_intercept"] == pytest.approx(intercept, rel=1e-4)
    val_x, val_y = manhattan_km_of(data["val_rows"][:, :-1]), data["val_rows"][:, -1]
    assert metrics["baseline_mae"] == pytest.approx(np.mean(np.abs(intercept + slope * val_x - val_y)), rel=1e-4)


def test_running_fit_merges_batches_exactly():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 2.0, 10_000)
    y = 3.0 + 2.2 * x + rng.normal(0, 1, x.size)
    fit = RunningLinearFit()
    for part_x, part_y in zip(np.array_split(x, 7), np.array_split(y, 7)):
        fit.update(part_x, part_y)
    fit = RunningLinearFit.from_state(json.loads(json.dumps(fit.state())))
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-9) and fit.intercept == pytest.approx(intercept, rel=1e-9)


def test_resume_continues_from_the_last_completed_chunk(data, tmp_path):
    checkpointed = {}

    def crash_after_chunk_2(stage, chunk, model):
        if stage == "end":
            checkpointed[chunk] = _weights(model)
        if stage == "end" and chunk == 2:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train.run(_args(data, tmp_path), on_chunk=crash_after_chunk_2)
    assert registry.run_names(str(tmp_path)) == []
    [interrupted] = registry.unfinished_runs(str(tmp_path))
    state = json.loads((tmp_path / interrupted / registry.CHECKPOINT_DIR / "state.json").read_text())
    assert state["chunks_done"] == 2 and state["rows_seen"] == 200

    resumed_chunks = []

    def record(stage, chunk, model):
        if stage == "start":
            resumed_chunks.append(chunk)
            if chunk == 3:
                assert _same(_weights(model), checkpointed[2]), "resume did not start from the checkpoint"

    # Flags that define a run are the checkpoint's: a different chunk size here is ignored.
    metrics = train.run(_args(data, tmp_path, "--resume", "--chunk_size", "7"), on_chunk=record)
    assert resumed_chunks == [3, 4, 5]
    assert metrics["run"] == interrupted and metrics["chunks"] == 5 and metrics["rows"] == 450
    assert [entry["chunk"] for entry in metrics["history"]] == [1, 2, 3, 4, 5]
    assert registry.run_names(str(tmp_path)) == [interrupted]
    assert registry.unfinished_runs(str(tmp_path)) == []


def test_cli_missing_shards_is_one_line_exit_2(tmp_path, capsys):
    code = train.main(["--train", str(tmp_path / "none-*.csv"), "--registry", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no file matches" in err


def test_cli_nothing_to_resume_is_one_line_exit_2(data, tmp_path, capsys):
    code = train.main(
        [
            *train_flags(data["folder"], tmp_path),
            "--resume",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nothing to resume" in err


def test_cli_bad_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        train.main(["--chunk_size", "0"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1 and "chunk_size" in err


def test_default_globs_are_the_preprocessing_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_DATA_PATH", str(tmp_path))
    args = train.parse_args([])
    folder = tmp_path / "processed" / "processed_2009-01-01_2015-01-01_generated_100000_seed42"
    assert args.train == str(folder / "train-*.csv") and args.val == str(folder / "val-*.csv")


def test_best_chunk_weights_are_kept_when_a_later_chunk_does_worse(data, tmp_path):
    rows = data["train_rows"][:300].copy()
    rows[200:, -1] *= 40  # a last chunk of absurd fares pulls the model away from the validation rides
    folder = tmp_path / "shards"
    write_shards(folder, rows, [300], prefix="train")
    write_shards(folder, data["val_rows"], [120], prefix="val")
    ends = {}
    args = train.parse_args(
        [
            *train_flags(folder, tmp_path / "registry"),
            "--chunk_size",
            "100",
            "--batch_size",
            "16",
            "--learning_rate",
            "0.01",
            "--max_epochs_per_chunk",
            "3",
            "--seed",
            "2",
        ]
    )
    metrics = train.run(
        args, on_chunk=lambda stage, chunk, model: ends.update({chunk: _weights(model)}) if stage == "end" else None
    )
    assert metrics["chunks"] == 3 and metrics["best_chunk"] == 2
    saved = registry.load_model(metrics["run"], registry=str(tmp_path / "registry"))
    assert _same(_weights(saved), ends[2]) and not _same(ends[2], ends[3])


def test_every_chunk_line_has_the_rate_and_the_pass_eta_unless_quiet(data, tmp_path, capsys):
    train.run(_args(data, tmp_path / "shown", "--max_epochs_per_chunk", "1"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("chunk ")]
    assert len(lines) == 5, lines  # 450 rows in chunks of 100
    assert all(re.search(r"; [\d,]+ rows/s, ETA \d+s\)$", line) for line in lines), lines
    train.run(_args(data, tmp_path / "quiet", "--max_epochs_per_chunk", "1", "--quiet"))
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("chunk ")]
    assert "done: 450 rows in 5 chunk(s)" in out
