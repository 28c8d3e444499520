"""gs:// for real, offline: storage, the trainer, the registry and prediction against a local GCS emulator.

The emulator (gcp-storage-emulator, in the emulators' venv .venv-bqemu/ made on
first use) is started on a free loopback port for this module and stopped by
its PID; STORAGE_EMULATOR_HOST points google-cloud-storage at it, as a user
would. Without the venv the tests skip, saying why; on CI (CI=true) they fail.

    .venv/bin/python -m pytest tests/test_gcs_storage.py -q
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipelines import predict, train
from pipelines.trainer.checkpoint import fingerprint_changes
from shard_helpers import processed_rows, train_flags
from taxifare_core import contract, features, storage
from taxifare_core.training import reader, registry

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

BUCKET = "taxifare-gcs-test"


def test_files_and_folders_round_trip(gs_root):
    base = f"{gs_root}/roundtrip"
    storage.write_text(f"{base}/a/one.csv", "1\n")
    storage.write_text(f"{base}/a/two.csv", "2\n")
    storage.write_text(f"{base}/a/deeper/three.csv", "3\n")
    assert storage.glob(f"{base}/a/*.csv") == [f"{base}/a/one.csv", f"{base}/a/two.csv"]  # * stays in its folder
    assert storage.glob(f"{base}/none-*.csv") == [] and storage.glob("gs://no-such-bucket/x-*.csv") == []
    assert storage.listdir(f"{base}/a") == ["deeper", "one.csv", "two.csv"]
    assert storage.isdir(f"{base}/a") and not storage.isdir(f"{base}/a/one.csv")
    assert storage.exists(f"{base}/a/one.csv") and storage.exists(f"{base}/a") and not storage.exists(f"{base}/b")
    assert storage.read_text(f"{base}/a/two.csv") == "2\n"
    assert storage.open_input_stream(f"{base}/a/one.csv").read() == b"1\n"
    with pytest.raises(FileNotFoundError):
        storage.read_text(f"{base}/a/missing.csv")
    storage.copy_file(f"{base}/a/one.csv", f"{base}/c/copy.csv")
    assert storage.read_text(f"{base}/c/copy.csv") == "1\n"
    storage.remove_tree(f"{base}/a")
    assert not storage.exists(f"{base}/a") and storage.exists(f"{base}/c/copy.csv")


def test_sizes_moves_and_deletes(gs_root):
    base = f"{gs_root}/moves"
    storage.write_bytes(f"{base}/d/x.bin", b"\x00" * 5)
    storage.write_text(f"{base}/d/sub/y.txt", "y")
    assert (
        storage.size(f"{base}/d/x.bin") == 5 and storage.isfile(f"{base}/d/x.bin") and not storage.isfile(f"{base}/d")
    )
    storage.move(f"{base}/d/x.bin", f"{base}/d/x2.bin")
    storage.move(f"{base}/d", f"{base}/e")  # a folder: object by object, not atomic
    assert not storage.exists(f"{base}/d") and storage.listdir(f"{base}/e") == ["sub", "x2.bin"]
    assert storage.read_text(f"{base}/e/sub/y.txt") == "y"
    storage.remove_file(f"{base}/e/x2.bin")
    storage.remove_file(f"{base}/e/x2.bin")  # absent: no error
    assert storage.listdir(f"{base}/e") == ["sub"]
    with pytest.raises(FileNotFoundError, match="gs://no-such-bucket/a.txt"):
        storage.write_text("gs://no-such-bucket/a.txt", "x")
    with pytest.raises(ValueError, match="whole bucket"):
        storage.remove_tree(gs_root)


def test_the_reader_streams_gs_shards(gs_root):
    rows = processed_rows(300, seed=5)
    storage.write_text(f"{gs_root}/shards/train-00000-of-00002.csv", features.format_csv(rows[:120]) + "\n")
    storage.write_text(f"{gs_root}/shards/train-00001-of-00002.csv", features.format_csv(rows[120:]) + "\n")
    chunks = list(reader.iter_chunks(f"{gs_root}/shards/train-*.csv", chunk_size=100))
    assert [len(fares) for _, fares in chunks] == [100, 100, 100]
    assert np.allclose(np.vstack([features_ for features_, _ in chunks]), rows[:, :-1], atol=1e-4)


def test_a_folder_is_created_once(gs_root):
    """What keeps two trainers that start in the same microsecond out of one run folder.

    (The race itself is closed by Cloud Storage's generation precondition, which the emulator ignores.)
    """
    assert storage.create_folder_exclusive(f"{gs_root}/exclusive/run")
    assert not storage.create_folder_exclusive(f"{gs_root}/exclusive/run")
    assert storage.isdir(f"{gs_root}/exclusive/run") and storage.listdir(f"{gs_root}/exclusive/run") == []
    storage.write_text(f"{gs_root}/exclusive/other/file.txt", "x")  # a folder made by an object in it
    assert not storage.create_folder_exclusive(f"{gs_root}/exclusive/other")
    first, second = registry.new_run(f"{gs_root}/registry-names"), registry.new_run(f"{gs_root}/registry-names")
    assert first != second


class _Interrupted(Exception):
    """Stands for a crash in the middle of a run."""


def test_train_resume_registry_and_predict_on_gs(gs_root, tmp_path, capsys):
    rows = processed_rows(560, seed=21)
    for name, part in (
        ("train-00000-of-00002", rows[:250]),
        ("train-00001-of-00002", rows[250:450]),
        ("val-00000-of-00001", rows[450:]),
    ):
        storage.write_text(f"{gs_root}/processed/{name}.csv", features.format_csv(part) + "\n")
    reg = f"{gs_root}/training_outputs"
    flags = [
        *train_flags(f"{gs_root}/processed", reg),
        "--chunk_size",
        "200",
        "--max_epochs_per_chunk",
        "1",
        "--seed",
        "1",
    ]

    def crash_after_chunk_2(stage, chunk, model):
        if stage == "end" and chunk == 2:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train.run(train.parse_args(flags), on_chunk=crash_after_chunk_2)
    assert registry.unfinished_runs(reg) and registry.run_names(reg) == []
    metrics = train.run(train.parse_args([*flags, "--resume"]))
    assert metrics["chunks"] == 3 and metrics["rows"] == 450
    assert [entry["chunk"] for entry in metrics["history"]] == [1, 2, 3]
    assert registry.run_names(reg) == [metrics["run"]] and registry.unfinished_runs(reg) == []
    assert registry.load_metrics(metrics["run"], registry=reg)["val_mae"] == pytest.approx(metrics["val_mae"])
    assert storage.exists(f"{reg}/{metrics['run']}/{registry.CURVE_FILE}")
    assert not storage.exists(f"{reg}/{metrics['run']}/{registry.CHECKPOINT_DIR}")
    model = registry.load_model(metrics["run"], registry=reg)
    assert model.predict(rows[450:453, :-1], verbose=0).shape == (3, 1)

    capsys.readouterr()
    assert predict.main(["--registry", reg, "--run", metrics["run"]]) == 0
    printed = capsys.readouterr().out
    fare = float(re.search(r"\$(-?\d+\.\d+)", printed).group(1))
    assert np.isclose(fare, predict.predict(pd.DataFrame([contract.EXAMPLE_RIDE]), model)[0], atol=0.006)
    assert f"[model {metrics['run']}]" in printed


def test_unsupported_scheme_is_one_clear_line(capsys):
    code = train.main(["--train", "s3://bucket/train-*.csv", "--val", "s3://bucket/val-*.csv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unsupported location s3://" in err


def test_object_versions_change_on_every_write(gs_root):
    """What the trainer's input fingerprint records for gs:// shards (resume refuses a rewritten one)."""
    path = f"{gs_root}/versions/train-00000-of-00001.csv"
    storage.write_text(path, "1\n")
    first = storage.version(path)
    storage.write_text(path, "1\n")
    second = storage.version(path)
    assert first["size"] == second["size"] == 2 and first["version"] != second["version"]
    assert fingerprint_changes({"train": {path: first}}, {"train": {path: second}}) == [f"{path} was rewritten"]
    storage.remove_file(path)
    storage.remove_file(path)  # absent: no error
    with pytest.raises(FileNotFoundError):
        storage.version(path)


def test_registry_counts_only_finished_runs_and_names_unreadable_models_on_gs(gs_root):
    reg = f"{gs_root}/registry-finished"
    half = registry.new_run(reg)
    storage.write_bytes(storage.join(half, registry.MODEL_FILE), b"PK truncated")  # killed before metrics.json
    assert registry.run_names(reg) == [] and registry.unfinished_runs(reg) == []
    registry.write_json(storage.join(half, registry.METRICS_FILE), {"val_mae": 1.0})
    name = half.rsplit("/", 1)[-1]
    assert registry.run_names(reg) == [name]
    with pytest.raises(
        registry.UnreadableModelError,
        match=f"model.keras of run {name} is unreadable "
        r"\(not a .keras archive, 12 bytes",
    ):
        registry.load_model(name, registry=reg)
    storage.write_text(f"{gs_root}/registry-file", "x")
    with pytest.raises(registry.BadRegistryError, match="is a file, not a folder"):
        registry.run_names(f"{gs_root}/registry-file")


def test_promote_and_roll_back_on_gs(gs_root):
    """production.json on gs:// (written by generation compare-and-swap); serve/predict's default follows it."""
    from shard_helpers import saved_tiny_model

    reg = f"{gs_root}/registry-production"
    local = []
    for seed in (1, 2):
        _, run_dir = saved_tiny_model(registry_root=reg, n_rows=60, seed=seed, model_seed=seed, promote=False)
        local.append(registry.run_name(run_dir))
    with pytest.raises(registry.NoModelError, match="no run was ever promoted"):
        registry.run_path(None, reg)
    registry.promote(local[0], reg)
    registry.promote(local[1], reg)
    assert registry.run_path(None, reg) == f"{reg}/{local[1]}"
    record = registry.rollback(reg)
    assert record["run"] == local[0] and registry.production_run(reg) == local[0]
    assert [entry["action"] for entry in registry.read_production(reg)["history"]] == ["promote", "promote", "rollback"]
    params = registry.read_json(f"{registry.run_path(None, reg)}/{registry.PARAMS_FILE}")
    assert params[registry.FEATURE_CONTRACT_KEY] == registry.feature_contract_hash()
