"""Training, registry and model loading that lose nothing and half-write nothing (issue 9).

Non-finite shards and NaN losses never become a run; `--resume` refuses changed
shards; a run folder counts only once finished; a killed checkpoint write never
spoils the previous one; unreadable models and bad paths are one line, exit 2.
Real Keras, real files, tiny sizes. See docs/training-safety.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import predict as predict_module
from pipelines import train
from shard_helpers import processed_rows, saved_tiny_model, train_flags, write_shards
from taxifare_core import contract
from taxifare_core.training import registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """330 processed rows: 270 to train on, 60 to validate on."""
    return processed_rows(330, seed=13)


def _shards(folder: Path, rows: np.ndarray) -> Path:
    """Train shards of 100, 100 and 70 rows (3 chunks of 100), one val shard of 60."""
    write_shards(folder, rows[:270], [100, 100, 70], prefix="train")
    write_shards(folder, rows[270:], [60], prefix="val")
    return folder


def _flags(folder: Path, registry_dir: Path, *extra: str) -> list[str]:
    return [
        *train_flags(folder, registry_dir),
        "--chunk_size",
        "100",
        "--batch_size",
        "32",
        "--max_epochs_per_chunk",
        "1",
        "--seed",
        "3",
        *extra,
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _refuse_constant(name: str):
    raise AssertionError(f"a JSON file holds {name}")


def _all_json_is_strict(root: Path) -> None:
    for path in root.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=_refuse_constant)


def _set_value(path: Path, line: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    values = lines[line - 1].split(",")
    values[column] = value
    lines[line - 1] = ",".join(values)
    path.write_text("\n".join(lines) + "\n")


class _Interrupted(Exception):
    """Stands for a crash in the middle of a run."""


def _crash_after_chunk(n: int):
    def hook(stage, chunk, model):
        if stage == "end" and chunk == n:
            raise _Interrupted

    return hook


def _stopped_after_chunk_1(rows, tmp_path) -> tuple[Path, list[str], str]:
    """A run of 3 chunks in tmp_path/registry, stopped once its first chunk's checkpoint is written:
    (its shard folder, its flags, the run's name)."""
    folder = _shards(tmp_path / "shards", rows)
    flags = _flags(folder, tmp_path / "registry")
    with pytest.raises(_Interrupted):
        train.run(train.parse_args(flags), on_chunk=_crash_after_chunk(1))
    [name] = registry.unfinished_runs(str(tmp_path / "registry"))
    return folder, flags, name


# --- non-finite data and NaN losses ---------------------------------------------------------------


def test_inf_in_a_train_shard_is_one_line_exit_2_and_no_run(rows, tmp_path, capsys):
    folder = _shards(tmp_path / "shards", rows)
    shard = folder / "train-00001-of-00003.csv"
    _set_value(shard, 42, 3, "inf")
    code = train.main(_flags(folder, tmp_path / "registry"))
    err = _one_line_error(capsys)
    assert code == 2 and f"{shard}: line 42: non-finite value inf in column 3" in err
    # Chunk 1 was checkpointed before chunk 2's bad row: resumable, never a finished run.
    assert registry.run_names(str(tmp_path / "registry")) == []
    assert len(registry.unfinished_runs(str(tmp_path / "registry"))) == 1
    _all_json_is_strict(tmp_path / "registry")


def test_inf_in_a_val_shard_refuses_before_any_run_folder(rows, tmp_path, capsys):
    folder = _shards(tmp_path / "shards", rows)
    _set_value(folder / "val-00000-of-00001.csv", 7, contract.N_FEATURES, "-inf")
    assert train.main(_flags(folder, tmp_path / "registry")) == 2
    assert "val-00000-of-00001.csv: line 7: non-finite value -inf" in _one_line_error(capsys)
    assert not (tmp_path / "registry").exists() or list((tmp_path / "registry").iterdir()) == []


@pytest.mark.parametrize("bad_chunk", [1, 2])
def test_a_loss_that_becomes_nan_is_exit_1_and_never_registered(rows, tmp_path, capsys, bad_chunk):
    """Finite fares of 1e25 dollars: their squared error overflows float32, the mse loss turns inf or NaN."""
    train_rows = rows[:270].copy()
    start = 100 * (bad_chunk - 1)
    train_rows[start : start + 100, -1] = 1e25
    folder = tmp_path / "shards"
    write_shards(folder, train_rows, [100, 100, 70], prefix="train")
    write_shards(folder, rows[270:], [60], prefix="val")
    registry_dir = tmp_path / "registry"
    code = train.main(_flags(folder, registry_dir, "--loss", "mse"))
    err = _one_line_error(capsys)
    assert code == train.EXIT_RUN_FAILED == 1
    assert re.search(f"loss became (nan|inf) in chunk {bad_chunk}, epoch 1: ", err) and "lower --learning_rate" in err
    assert registry.run_names(str(registry_dir)) == []
    assert not list(registry_dir.rglob(registry.METRICS_FILE)) and not list(registry_dir.rglob(registry.MODEL_FILE))
    if bad_chunk == 1:
        assert "no run folder was created" in err
        assert not registry_dir.exists() or list(registry_dir.iterdir()) == []
    else:
        [kept] = registry.unfinished_runs(str(registry_dir))
        assert f"run {kept} is not registered as finished; its checkpoint after chunk 1 is kept" in err
    _all_json_is_strict(tmp_path)


def test_json_files_are_strict_json(tmp_path):
    with pytest.raises(ValueError):
        registry.write_json(str(tmp_path / "x.json"), {"val_mae": float("nan")})
    assert not (tmp_path / "x.json").exists()


# --- resume fingerprint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, phrase",
    [
        ("rewrite", "train-00002-of-00003.csv changed size"),
        ("touch", "train-00002-of-00003.csv was rewritten"),
        ("remove", "train-00002-of-00003.csv is gone"),
        ("add", "train-00003-of-00003.csv is new"),
        ("val", "val-00000-of-00001.csv changed size"),
    ],
)
def test_resume_refuses_shards_that_changed(rows, tmp_path, capsys, change, phrase):
    folder, flags, name = _stopped_after_chunk_1(rows, tmp_path)
    shard = folder / "train-00002-of-00003.csv"
    if change == "rewrite":
        write_shards(folder, rows[:170], [100, 0, 70], prefix="train")
    elif change == "touch":
        stat = shard.stat()
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    elif change == "remove":
        shard.unlink()
    elif change == "add":
        (folder / "train-00003-of-00003.csv").write_text(shard.read_text())
    else:
        write_shards(folder, rows[270:300], [30], prefix="val")
    capsys.readouterr()
    assert train.main([*flags, "--resume"]) == 2
    err = _one_line_error(capsys)
    assert f"the shards changed since run {name} started: " in err and phrase in err and "start a new run" in err
    assert registry.unfinished_runs(str(tmp_path / "registry")) == [name]  # still there for the old shards


def test_checkpoint_records_the_input_fingerprint(rows, tmp_path):
    folder, _, name = _stopped_after_chunk_1(rows, tmp_path)
    state = json.loads((tmp_path / "registry" / name / registry.CHECKPOINT_DIR / "state.json").read_text())
    shard = folder / "train-00000-of-00003.csv"
    assert state["inputs"]["train"][str(shard)] == {
        "size": shard.stat().st_size,
        "version": str(shard.stat().st_mtime_ns),
    }
    assert len(state["inputs"]["train"]) == 3 and len(state["inputs"]["val"]) == 1


# --- checkpoints a kill cannot spoil --------------------------------------------------------------


def test_resume_after_a_killed_checkpoint_write_finishes_with_the_same_rows(rows, tmp_path):
    """A kill while chunk 2's checkpoint was written leaves a truncated model file and a temp state file."""
    folder, flags, name = _stopped_after_chunk_1(rows, tmp_path)
    registry_dir = tmp_path / "registry"
    checkpoint = registry_dir / name / registry.CHECKPOINT_DIR
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model-000001.keras", "state.json"]
    complete = (checkpoint / "model-000001.keras").read_bytes()
    (checkpoint / "model-000002.keras").write_bytes(complete[: len(complete) // 2])
    (checkpoint / "state.json.tmp-4242").write_text('{"chunks_done": 2, "rows_se')
    (registry_dir / name / "metrics.json.tmp-4242").write_text('{"val_m')  # as if killed in an earlier save
    assert registry.run_names(str(registry_dir)) == [] and registry.unfinished_runs(str(registry_dir)) == [name]
    resumed = train.run(train.parse_args([*flags, "--resume"]))
    # What an uninterrupted run of these shards gives (tests/test_train.py checks the uninterrupted side).
    assert resumed["run"] == name and resumed["rows"] == 270 and resumed["chunks"] == 3 and resumed["val_rows"] == 60
    assert [entry["rows"] for entry in resumed["history"]] == [100, 100, 70]
    assert [entry["chunk"] for entry in resumed["history"]] == [1, 2, 3]
    assert registry.run_names(str(registry_dir)) == [name] and not checkpoint.exists()
    assert sorted(p.name for p in (registry_dir / name).iterdir()) == sorted(
        [registry.MODEL_FILE, registry.PARAMS_FILE, registry.METRICS_FILE, registry.CURVE_FILE]
    )


def test_checkpoint_files_left_are_only_the_ones_the_state_names(rows, tmp_path):
    """A later chunk that does worse keeps the best chunk's weights file beside the newest model."""
    folder = _shards(tmp_path / "shards", rows)
    seen = {}

    def record(stage, chunk, model):
        if stage == "start" and chunk == 3:
            # Chunk 3 starts with every prediction $1,000 off, which a few small steps cannot undo:
            # its val loss is worse than an earlier chunk's, whatever training did so far.
            weights = model.get_weights()
            weights[-1] = weights[-1] + 1000
            model.set_weights(weights)
        if stage == "end":
            [name] = registry.unfinished_runs(str(tmp_path / "registry"))
            folder = tmp_path / "registry" / name / registry.CHECKPOINT_DIR
            state = json.loads((folder / "state.json").read_text())
            seen[chunk] = (sorted(p.name for p in folder.iterdir()), state["best_chunk"])

    train.run(train.parse_args(_flags(folder, tmp_path / "registry")), on_chunk=record)
    assert seen[1] == (["model-000001.keras", "state.json"], 1)
    files, best = seen[3]
    assert best in (1, 2)
    assert files == sorted([f"best-{best:06d}.weights.h5", "model-000003.keras", "state.json"])


@pytest.mark.parametrize(
    "file, keep, words",
    [
        ("state.json", 50, "is unreadable"),
        ("model-000001.keras", 1000, "is unreadable (not a .keras archive"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_exit_2(rows, tmp_path, capsys, file, keep, words):
    """A checkpoint file cut short (the state, the model): resume refuses in one line."""
    _, flags, name = _stopped_after_chunk_1(rows, tmp_path)
    damaged = tmp_path / "registry" / name / registry.CHECKPOINT_DIR / file
    damaged.write_bytes(damaged.read_bytes()[:keep])
    capsys.readouterr()
    assert train.main([*flags, "--resume"]) == 2
    assert f"the checkpoint of run {name} {words}" in _one_line_error(capsys)


# --- the registry's finished-run rule -------------------------------------------------------------


def test_a_run_folder_appears_with_its_first_checkpoint_and_counts_once_finished(rows, tmp_path):
    folder = _shards(tmp_path / "shards", rows)
    registry_dir = tmp_path / "registry"
    seen = []

    def look(stage, chunk, model):
        seen.append(
            (stage, chunk, registry.run_names(str(registry_dir)), registry.run_names(str(registry_dir), finished=False))
        )

    metrics = train.run(train.parse_args(_flags(folder, registry_dir)), on_chunk=look)
    assert seen[0] == ("start", 1, [], [])  # nothing in the registry until a checkpoint exists
    assert all(finished == [] and everything == [metrics["run"]] for _, _, finished, everything in seen[1:])
    assert registry.run_names(str(registry_dir)) == [metrics["run"]]


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(rows, tmp_path):
    folder = _shards(tmp_path / "shards", rows)

    def crash_in_chunk_1(stage, chunk, model):
        raise _Interrupted

    with pytest.raises(_Interrupted):
        train.run(train.parse_args(_flags(folder, tmp_path / "registry")), on_chunk=crash_in_chunk_1)
    assert registry.run_names(str(tmp_path / "registry"), finished=False) == []


def test_a_half_saved_run_is_never_the_latest(tmp_path):
    """A run killed inside save_run (model.keras written, metrics.json not yet) is not a model to load."""
    model, finished = saved_tiny_model(tmp_path, 60, seed=1, model_seed=1, metrics={"val_mae": 1.0})
    half = registry.new_run(str(tmp_path))
    registry.save_keras_model(model, str(Path(half) / registry.MODEL_FILE))
    registry.write_json(str(Path(half) / registry.PARAMS_FILE), {})
    assert registry.run_names(str(tmp_path)) == [Path(finished).name]
    assert registry.run_path(registry=str(tmp_path)) == finished
    with pytest.raises(registry.NoModelError, match="no finished run"):
        registry.run_path(Path(half).name, str(tmp_path))


@pytest.mark.parametrize("main", [train.main, predict_module.main])
def test_a_registry_path_that_is_a_file_is_one_line_exit_2(rows, tmp_path, capsys, main):
    folder = _shards(tmp_path / "shards", rows)
    (tmp_path / "registry").write_text("not a folder")
    flags = _flags(folder, tmp_path / "registry") if main is train.main else ["--registry", str(tmp_path / "registry")]
    assert main(flags) == 2
    assert f"the registry {tmp_path / 'registry'} is a file, not a folder" in _one_line_error(capsys)


def test_chunk_size_beyond_memory_is_one_line_exit_2(rows, tmp_path, capsys):
    folder = _shards(tmp_path / "shards", rows)
    assert train.main(_flags(folder, tmp_path / "registry", "--chunk_size", "1000000000")) == 2
    err = _one_line_error(capsys)
    assert "--chunk_size 1,000,000,000 needs 264.0 GB for one chunk's rows" in err and "use a smaller one" in err


def test_max_val_rows_beyond_memory_reads_the_rows_there_are(rows, tmp_path):
    folder = _shards(tmp_path / "shards", rows)
    metrics = train.run(train.parse_args(_flags(folder, tmp_path / "registry", "--max_val_rows", "1000000000")))
    assert metrics["val_rows"] == 60


# --- unreadable and broken models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs_once(tmp_path_factory):
    """A registry with two finished runs, trained once for the module."""
    root = tmp_path_factory.mktemp("two_runs")
    _, older = saved_tiny_model(root, 60, seed=1, model_seed=1, metrics={"val_mae": 1.0})
    _, newer = saved_tiny_model(root, 60, seed=2, model_seed=2, metrics={"val_mae": 1.0})
    return root, Path(older).name, Path(newer).name


@pytest.fixture
def two_runs(two_runs_once, tmp_path):
    """A copy of that registry each test may damage: (root, older name, newer name)."""
    source, older, newer = two_runs_once
    shutil.copytree(source, tmp_path / "registry")
    return tmp_path / "registry", older, newer


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: b"", "empty file"),
        (lambda data: data[: len(data) // 2], "not a .keras archive"),
    ],
)
def test_an_unreadable_model_names_another_run(two_runs, capsys, damage, problem):
    root, older, newer = two_runs
    model_file = root / newer / registry.MODEL_FILE
    model_file.write_bytes(damage(model_file.read_bytes()))
    expected = f"model.keras of run {newer} is unreadable ({problem}"
    with pytest.raises(registry.UnreadableModelError, match=re.escape(expected)) as refused:
        registry.load_model(registry=str(root))
    assert refused.value.alternative == older and str(refused.value).endswith(f": use --run {older}")
    for argv in (
        ["--registry", str(root)],
        ["--registry", str(root), "--input", str(root / "rides.csv"), "--output", str(root / "out")],
    ):
        assert predict_module.main(argv) == 2
        err = _one_line_error(capsys)
        assert expected in err and err.endswith(f"use --run {older}")
    assert predict_module.main(["--registry", str(root), "--run", older]) == 0


def test_an_unreadable_only_run_says_to_train_again(tmp_path, capsys):
    _, run_dir = saved_tiny_model(tmp_path, 60, seed=1, model_seed=1, metrics={"val_mae": 1.0})
    (Path(run_dir) / registry.MODEL_FILE).write_bytes(b"")
    assert predict_module.main(["--registry", str(tmp_path)]) == 2
    assert "unreadable (empty file): no other finished run in" in _one_line_error(capsys)


def test_a_model_answering_nan_is_an_error_not_a_fare(two_runs, capsys):
    root, older, newer = two_runs
    model = registry.load_model(newer, str(root))
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    registry.save_keras_model(model, str(root / newer / registry.MODEL_FILE))
    with pytest.raises(predict_module.NonFiniteFareError):
        predict_module.predict(pd.DataFrame([contract.EXAMPLE_RIDE]), model)
    assert predict_module.main(["--registry", str(root)]) == 2
    captured = capsys.readouterr()
    assert "$" not in captured.out and "nan" not in captured.out.lower()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and f"the model of run {newer} answers NaN" in err
    assert err.endswith(f"use --run {older}")


def test_shards_rewritten_during_a_run_are_never_registered(rows, tmp_path):
    folder = _shards(tmp_path / "shards", rows)
    shard = folder / "train-00000-of-00003.csv"

    def rewrite_after_chunk_1(stage, chunk, model):
        if stage == "end" and chunk == 1:
            shard.write_text(shard.read_text())

    with pytest.raises(train.UsageError, match=r"the shards changed while run \S+ trained: .*train-00000-of-00003"):
        train.run(train.parse_args(_flags(folder, tmp_path / "registry")), on_chunk=rewrite_after_chunk_1)
    assert registry.run_names(str(tmp_path / "registry")) == []


def test_a_real_trainer_process_refusing_inf_is_one_line_exit_2(rows, tmp_path):
    """The exit code a scheduler sees, from a real process: no traceback, nothing registered."""
    folder = _shards(tmp_path / "shards", rows)
    _set_value(folder / "val-00000-of-00001.csv", 3, 0, "inf")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train", *_flags(folder, tmp_path / "registry")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        (
            f"python -m pipelines.train: error: {folder / 'val-00000-of-00001.csv'}: line 3: non-finite value inf "
            "in column 0 (processed shards hold finite numbers only: re-run preprocessing)"
        )
    ]
    assert registry.run_names(str(tmp_path / "registry"), finished=False) == []
