"""Crash-safe output folders: publish by manifest, refuse incomplete sets, one run per folder, no litter."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines import preprocess
from pipelines.preprocessing import pipeline as preprocessing_pipeline
from pipelines.preprocessing.options import parse_args, resolve_config
from taxifare_core import generate
from taxifare_core.storage import outputs
from taxifare_core.training import reader

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under a folder (the lock file aside) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != outputs.LOCK_FILE}


def write_rides(path: Path, n_rows: int = 400, seed: int = 3) -> Path:
    """A CSV of generated raw rides."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generate.generate_rides(n_rows, seed=seed).to_csv(path, index=False)
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pipelines.preprocess ARGS` in its own process."""
    return subprocess.run([sys.executable, "-m", "pipelines.preprocess", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def rides(tmp_path_factory) -> Path:
    return write_rides(tmp_path_factory.mktemp("rides") / "rides.csv")


# --- pure: manifest, resolve, litter --------------------------------------------------

def _published_folder(tmp_path: Path) -> tuple[Path, str]:
    """A hand-made output folder with one published run of two train shards."""
    run = outputs.new_run_name()
    (tmp_path / run).mkdir(parents=True)
    (tmp_path / run / "train-00000-of-00002.csv").write_text("1,2\n")
    (tmp_path / run / "train-00001-of-00002.csv").write_text("3,4\n5,6\n")
    (tmp_path / run / "val-00000-of-00001.csv").write_text("7,8\n")
    outputs.publish(str(tmp_path), run, {"train_rows": 3})
    return tmp_path, run


def test_publish_lists_every_file_and_resolve_finds_them_by_the_documented_glob(tmp_path):
    folder, run = _published_folder(tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["train_rows"] == 3 and summary["output"]["run"] == run and "kind" not in summary["output"]
    assert summary["output"]["files"] == {f"{run}/train-00000-of-00002.csv": 4, f"{run}/train-00001-of-00002.csv": 8,
                                          f"{run}/val-00000-of-00001.csv": 4}
    assert outputs.resolve(str(folder / "train-*.csv")) == [
        str(folder / run / "train-00000-of-00002.csv"), str(folder / run / "train-00001-of-00002.csv")]
    assert reader.shard_paths(str(folder / "val-*.csv")) == [str(folder / run / "val-00000-of-00001.csv")]
    assert outputs.resolve(str(tmp_path / "elsewhere" / "train-*.csv")) is None  # no manifest: a plain glob


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_text("3,4\n"), "has 4 bytes, summary.json says 8"),
])
def test_reader_refuses_an_incomplete_shard_set_in_one_line_naming_the_folder(tmp_path, damage, message):
    folder, run = _published_folder(tmp_path)
    damage(folder / run / "train-00001-of-00002.csv")
    with pytest.raises(reader.ShardError, match=message) as error:
        reader.shard_paths(str(folder / "train-*.csv"))
    assert f"incomplete output in {folder}" in str(error.value) and "\n" not in str(error.value)


def test_a_folder_with_only_unfinished_runs_is_refused_with_a_hint(tmp_path):
    (tmp_path / "run-20260101T000000Z-abcdef").mkdir()
    (tmp_path / "run-20260101T000000Z-abcdef" / "train-00000-of-00001.csv").write_text("1\n")
    with pytest.raises(reader.ShardError, match="no complete output in .*no published summary.json"):
        reader.shard_paths(str(tmp_path / "train-*.csv"))


def test_remove_litter_keeps_the_published_run_only(tmp_path):
    folder, run = _published_folder(tmp_path)
    for name in ("run-20260101T000000Z-abcdef", "beam-temp-train-123"):
        (folder / name).mkdir()
        (folder / name / "x").write_text("x")
    (folder / "summary.json.tmp-99").write_text("{")
    (folder / "run-notes").mkdir()  # not a name this module gives: never removed
    removed = outputs.remove_litter(str(folder), outputs.read_manifest(str(folder)))
    assert sorted(removed) == ["beam-temp-train-123", "run-20260101T000000Z-abcdef", "summary.json.tmp-99"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([run, "run-notes", "summary.json"])


# --- the lock -------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from taxifare_core.storage import outputs
    lock = outputs.OutputLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A real process holding the folder's lock (as a running preprocessing would)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_run_into_a_locked_folder_stops_at_once_and_a_dead_runs_lock_is_taken_over(rides, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    holder = _hold_lock(output)
    try:
        started = time.perf_counter()
        done = run_cli("--input", str(rides), "--output", str(output))
        assert done.returncode == 2, done.stderr[-2000:]
        [line] = [line for line in done.stderr.splitlines() if "error" in line]
        assert f"output {output} is being written by another run (pid {holder.pid} on " in line
        assert "wait or use another --output" in line
        assert time.perf_counter() - started < 60 and not (output / "summary.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (output / outputs.LOCK_FILE).exists()  # the killed holder's lock stays behind ...
    done = run_cli("--input", str(rides), "--output", str(output))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"took over the lock of a run that is no longer running (pid {holder.pid} on" in done.stderr
    assert not (output / outputs.LOCK_FILE).exists()  # ... and is released by the run that took it


def test_two_preprocessing_processes_into_one_folder_never_mix(rides, tmp_path):
    output = tmp_path / "out"
    commands = [[sys.executable, "-m", "pipelines.preprocess", "--input", str(rides), "--output", str(output),
                 "--num_shards", str(n)] for n in (1, 3)]
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    codes = [p.wait(timeout=300) for p in procs]
    assert 0 in codes and set(codes) <= {0, 2}
    for proc, code in zip(procs, codes):
        if code == 2:
            assert "is being written by another run" in proc.stderr.read()
    summary = json.loads((output / "summary.json").read_text())
    shards = outputs.resolve(str(output / "train-*.csv"))
    assert {Path(p).parent.name for p in shards} == {summary["output"]["run"]}
    assert sum(len(Path(p).read_text().splitlines()) for p in shards) == summary["train_rows"]


# --- preprocessing: publish, failures, empty runs, default folders --------------------

def test_failed_run_leaves_the_previous_output_byte_for_byte_and_no_litter(rides, tmp_path, monkeypatch):
    output = tmp_path / "out"
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    before = tree_hashes(output)
    (output / "beam-temp-train-0123").mkdir()  # an earlier crash's leftovers
    (output / "run-20260101T000000Z-abcdef").mkdir()

    class Explode(preprocessing_pipeline.PreprocessRides):
        def expand(self, rides_):
            return super().expand(rides_ | "Explode" >> preprocessing_pipeline.beam.Map(_explode))

    monkeypatch.setattr(preprocessing_pipeline, "PreprocessRides", Explode)
    with pytest.raises(Exception, match="disk on fire"):
        preprocess.main(["--input", str(rides), "--output", str(output)])
    assert tree_hashes(output) == before
    assert sorted(p.name for p in output.iterdir()) == sorted({Path(k).parts[0] for k in before})
    assert len(reader.shard_paths(str(output / "train-*.csv"))) == 1


def _explode(element):
    raise RuntimeError("disk on fire")


def test_all_bad_input_fails_unpublished_unless_allow_empty(rides, tmp_path, capsys):
    output = tmp_path / "out"
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    before = tree_hashes(output)
    bad = tmp_path / "bad" / "rides.csv"
    bad.parent.mkdir()
    bad.write_text(rides.read_text().splitlines()[0] + "\n" + "\n".join(f"k{i},oops,,,,,," for i in range(5)) + "\n")
    capsys.readouterr()
    assert preprocess.main(["--input", str(bad), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    # (only our own line: an earlier in-process test may have left a logging handler on a closed stream)
    [line] = [line for line in err.splitlines() if line.startswith("preprocess: error:")]
    assert "no rows to write (5 read, 5 bad input" in line and "--allow_empty" in line
    kept = [p for p in output.iterdir() if p.is_dir() and not (p.name in {Path(k).parts[0] for k in before})]
    assert len(kept) == 1 and (kept[0] / "summary.json").exists()  # kept for inspection, not published
    assert {k: v for k, v in tree_hashes(output).items() if not k.startswith(kept[0].name)} == before
    assert preprocess.main(["--input", str(bad), "--output", str(output), "--allow_empty"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["bad_input"] == 5 and summary["train_rows"] == 0 and not kept[0].exists()


def test_output_that_is_a_file_is_one_line_exit_2(rides, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    done = run_cli("--input", str(rides), "--output", str(target))
    assert done.returncode == 2 and target.read_text() == "keep me"
    assert done.stderr.strip().splitlines()[-1] == (
        f"preprocess: error: output {target} is a file, not a folder: pass another --output")


def test_inputs_in_folders_of_the_same_name_get_different_default_outputs(tmp_path):
    configs = [resolve_config(*parse_args(["--input", str(tmp_path / x / "data" / "*.csv")])) for x in ("x1", "x2")]
    assert configs[0].output != configs[1].output
    assert all(Path(c.output).name.startswith("processed_2009-01-01_2015-01-01_data-") for c in configs)
    again = resolve_config(*parse_args(["--input", str(tmp_path / "x1" / "data" / "*.csv")]))
    assert again.output == configs[0].output  # stable
    sample = resolve_config(*parse_args([]), default_input=lambda: "/d/raw/generated_100000_seed42/rides-*.csv")
    assert Path(sample.output).name == "processed_2009-01-01_2015-01-01_generated_100000_seed42"


def test_a_csv_run_reading_the_raw_cache_of_its_output_folder_keeps_it(rides, tmp_path):
    """The raw cache a BigQuery run leaves is read back by a CSV run into the same folder: it stays listed."""
    output = tmp_path / "out"
    run = outputs.new_run_name()
    (output / run).mkdir(parents=True)
    (output / run / "raw-00000-of-00001.csv").write_text(rides.read_text())
    outputs.publish(str(output), run, {})
    assert preprocess.main(["--input", str(output / "raw-*.csv"), "--output", str(output)]) == 0
    manifest = outputs.read_manifest(str(output))
    assert manifest["run"] != run and f"{run}/raw-00000-of-00001.csv" in manifest["files"]
    assert len(outputs.resolve(str(output / "raw-*.csv"))) == 1
    assert len(reader.shard_paths(str(output / "train-*.csv"))) == 1


# --- batch prediction's output folder ---------------------------------------------------

@pytest.fixture(scope="module")
def model_registry(tmp_path_factory) -> str:
    from shard_helpers import saved_tiny_model

    root = tmp_path_factory.mktemp("registry")
    saved_tiny_model(root, n_rows=200, seed=1, model_seed=1)
    return str(root)


def test_batch_prediction_publishes_a_run_and_a_rerun_replaces_it_whole(rides, tmp_path, model_registry):
    from pipelines import batch_predict

    output = tmp_path / "predictions"
    (output).mkdir()
    (output / "predictions-00000-of-00002.csv").write_text("key,fare_pred\nstale,1.00\n")  # the flat layout's
    (output / "beam-temp-predictions-0a1b").mkdir()
    first = batch_predict.run(str(rides), str(output), registry_dir=model_registry)
    manifest = outputs.read_manifest(str(output))
    assert sorted(p.name for p in output.iterdir()) == sorted([manifest["run"], "summary.json"])
    priced = outputs.resolve(str(output / "predictions-*.csv"))
    assert sum(len(Path(p).read_text().splitlines()) - 1 for p in priced) == first["predicted"] > 0
    second = batch_predict.run(str(rides), str(output), registry_dir=model_registry)
    again = outputs.read_manifest(str(output))
    assert again["run"] != manifest["run"] and not (output / manifest["run"]).exists()
    assert second["predicted"] == first["predicted"]


def test_batch_prediction_output_that_is_a_file_or_locked_is_one_line_exit_2(rides, tmp_path, model_registry, capsys):
    from pipelines import predict

    target = tmp_path / "file.csv"
    target.write_text("keep")
    assert predict.main(["--input", str(rides), "--output", str(target), "--registry", model_registry]) == 2
    assert capsys.readouterr().err.strip() == (
        f"python -m pipelines.predict: error: output {target} is a file, not a folder: pass another --output")
    output = tmp_path / "busy"
    output.mkdir()
    holder = _hold_lock(output)
    try:
        assert predict.main(["--input", str(rides), "--output", str(output), "--registry", model_registry]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"is being written by another run (pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_batch_prediction_never_publishes_over_a_preprocessing_output(rides, tmp_path, model_registry, capsys):
    from pipelines import predict

    output = tmp_path / "processed"
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    before = tree_hashes(output)
    capsys.readouterr()
    assert predict.main(["--input", str(rides), "--output", str(output), "--registry", model_registry]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"output {output} holds a preprocess output, not a predict one: pass another --output")
    assert tree_hashes(output) == before
