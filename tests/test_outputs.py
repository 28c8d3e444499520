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
from shard_helpers import train_flags
from taxifare_core import generate
from taxifare_core.storage import outputs
from taxifare_core.training import reader

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under a folder (the lock file aside) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != outputs.LOCK_FILE
    }


def write_rides(path: Path, n_rows: int = 400, seed: int = 3) -> Path:
    """A CSV of generated raw rides."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generate.generate_rides(n_rows, seed=seed).to_csv(path, index=False)
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pipelines.preprocess ARGS` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


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
    assert summary["output"]["files"] == {
        f"{run}/train-00000-of-00002.csv": 4,
        f"{run}/train-00001-of-00002.csv": 8,
        f"{run}/val-00000-of-00001.csv": 4,
    }
    assert outputs.resolve(str(folder / "train-*.csv")) == [
        str(folder / run / "train-00000-of-00002.csv"),
        str(folder / run / "train-00001-of-00002.csv"),
    ]
    assert reader.shard_paths(str(folder / "val-*.csv")) == [str(folder / run / "val-00000-of-00001.csv")]
    assert outputs.resolve(str(tmp_path / "elsewhere" / "train-*.csv")) is None  # no manifest: a plain glob


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_text("3,4\n"), "has 4 bytes, summary.json says 8"),
    ],
)
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


def _marked_run(folder: Path, name: str = "run-20260101T000000.000000Z-abcdef") -> Path:
    """A run folder as a failed or killed run of this project leaves it: named, marked, some files."""
    (folder / name).mkdir(parents=True)
    (folder / name / outputs.MARKER_FILE).write_text("{}\n")
    (folder / name / "train-00000-of-00001.csv").write_text("1\n")
    return folder / name


def test_tidy_removes_only_marked_or_previously_published_runs(tmp_path):
    folder, run = _published_folder(tmp_path)
    previous = outputs.read_manifest(str(folder))
    stale = _marked_run(folder)
    for name in ("run-20260101T000000Z-abcdef", "beam-temp-train-123"):  # named like ours, not marked
        (folder / name).mkdir()
        (folder / name / "x").write_text("x")
    (folder / "thesis.tmp-2").write_text("mine")
    new = outputs.new_run_name()
    (folder / new).mkdir()
    (folder / new / "train-00000-of-00001.csv").write_text("9\n")
    manifest = outputs.publish(str(folder), new, {})[outputs.MANIFEST_KEY]
    removed, warnings = outputs.tidy(str(folder), manifest, previous)
    assert sorted(removed) == sorted([run, stale.name]) and warnings == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [new, "run-20260101T000000Z-abcdef", "beam-temp-train-123", "thesis.tmp-2", "summary.json"]
    )


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
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
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
    commands = [
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--input",
            str(rides),
            "--output",
            str(output),
            "--num_shards",
            str(n),
        ]
        for n in (1, 3)
    ]
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
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
    (output / "beam-temp-train-0123").mkdir()  # not ours: never removed
    (output / "run-20260101T000000Z-abcdef").mkdir()
    _marked_run(output)  # an earlier killed run's folder: removed only once a new run is published
    before = tree_hashes(output)

    class Explode(preprocessing_pipeline.PreprocessRides):
        def expand(self, rides_):
            return super().expand(rides_ | "Explode" >> preprocessing_pipeline.beam.Map(_explode))

    monkeypatch.setattr(preprocessing_pipeline, "PreprocessRides", Explode)
    with pytest.raises(Exception, match="disk on fire"):
        preprocess.main(["--input", str(rides), "--output", str(output)])
    assert tree_hashes(output) == before
    assert sorted(p.name for p in output.iterdir()) == sorted(
        {Path(k).parts[0] for k in before} | {"beam-temp-train-0123", "run-20260101T000000Z-abcdef"}
    )
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
    kept = [p for p in output.iterdir() if p.is_dir() and p.name not in {Path(k).parts[0] for k in before}]
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
        f"preprocess: error: output {target} is a file, not a folder: pass another --output"
    )


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
        f"python -m pipelines.predict: error: output {target} is a file, not a folder: pass another --output"
    )
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
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"output {output} holds a preprocess output, not a predict one: pass another --output")
    )
    assert tree_hashes(output) == before


# --- a job removes only what it can prove it wrote ----------------------------------------

# What a person may keep in a folder they pass as --output (names that look like the jobs' own included).
FOREIGN = (
    "notes.txt",
    "report.html",
    "stats.json",
    "thesis.tmp-2",
    "beam-temp-mine/keep.txt",
    "run-20200101T000000Z-abcdef/results.csv",
    "train-1-of-2.csv",
)


def _foreign_folder(folder: Path) -> dict[str, str]:
    """A folder holding FOREIGN files; returns their hashes."""
    for rel in FOREIGN:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(f"a person's {rel}\n")
    return tree_hashes(folder)


def test_preprocess_refuses_a_folder_of_someone_elses_files_and_force_keeps_every_one(rides, tmp_path):
    output = tmp_path / "mine"
    before = _foreign_folder(output)
    done = run_cli("--input", str(rides), "--output", str(output))
    assert done.returncode == 2 and tree_hashes(output) == before
    [line] = [line for line in done.stderr.splitlines() if "error" in line]
    assert line.startswith(f"preprocess: error: output {output} holds files this project did not write (")
    assert "--force" in line
    for _ in range(2):  # a second run replaces the first one's run, and still nothing of the person's
        done = run_cli("--input", str(rides), "--output", str(output), "--force")
        assert done.returncode == 0, done.stderr[-2000:]
        assert {k: v for k, v in tree_hashes(output).items() if k in before} == before
    manifest = outputs.read_manifest(str(output))
    runs = [p.name for p in output.iterdir() if outputs.is_marked_run(str(output), p.name)]
    assert runs == [manifest["run"]]


def test_batch_prediction_refuses_a_folder_of_someone_elses_files_and_force_keeps_every_one(
    rides, tmp_path, model_registry, capsys
):
    from pipelines import predict

    output = tmp_path / "mine"
    before = _foreign_folder(output)
    args = ["--input", str(rides), "--output", str(output), "--registry", model_registry]
    assert predict.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"output {output} holds files this project did not write" in err
    assert tree_hashes(output) == before
    for _ in range(2):
        assert predict.main([*args, "--force"]) == 0
        assert {k: v for k, v in tree_hashes(output).items() if k in before} == before
    assert len(outputs.resolve(str(output / "predictions-*.csv"))) >= 1


@pytest.mark.parametrize("where", ["current", "home", "root"])
def test_output_equal_to_the_current_a_home_or_the_root_folder_is_refused(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    folder = {"current": ".", "home": str(tmp_path / "home"), "root": "/"}[where]
    message = {"current": "is the current folder", "home": "is a home folder", "root": "is the root folder"}[where]
    with pytest.raises(outputs.OutputUsageError, match=message), outputs.publishing_run(folder, "preprocess", True):
        pass
    assert list((tmp_path / "home").iterdir()) == []


def test_the_current_folder_is_refused_by_the_cli_in_one_line(rides):
    done = run_cli("--input", str(rides), "--output", ".", "--force")
    assert done.returncode == 2
    # "." is shown as the absolute path it stands for (local paths are made absolute for the workers).
    assert done.stderr.strip().splitlines()[-1] == (
        f"preprocess: error: output {os.path.abspath(ROOT)} is the current folder: pass a folder of its own "
        "for the job's files (e.g. a new sub-folder)"
    )


def test_publishing_run_removes_nothing_before_it_publishes_and_its_own_folder_on_failure(tmp_path):
    folder, run = _published_folder(tmp_path)
    stale = _marked_run(folder)
    before = tree_hashes(folder)
    with (
        pytest.raises(RuntimeError, match="pipeline failed"),
        outputs.publishing_run(str(folder), "preprocess") as attempt,
    ):
        assert tree_hashes(folder) == {**before, f"{attempt.name}/{outputs.MARKER_FILE}": ANY_HASH}
        raise RuntimeError("pipeline failed")
    assert tree_hashes(folder) == before and stale.exists()
    with outputs.publishing_run(str(folder), "preprocess") as done:
        (Path(done.path) / "train-00000-of-00001.csv").write_text("1\n")
        assert stale.exists() and (folder / run).exists()  # still there until published
        done.publish({})
    assert sorted(p.name for p in folder.iterdir()) == sorted([done.name, "summary.json"])
    assert outputs.read_manifest(str(folder))["files"] == {f"{done.name}/train-00000-of-00001.csv": 2}


class _AnyHash(str):
    def __eq__(self, other):
        return isinstance(other, str) and len(other) == 64


ANY_HASH = _AnyHash()


# --- read-only folders ---------------------------------------------------------------------


@pytest.fixture
def immutable(tmp_path):
    """make(path): an immutable folder (chattr +i), which refuses even root; undone after the test."""
    made = []

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.skip(f"chattr +i is not available here ({done.stderr.strip()}): no folder refuses root")
        made.append(path)
        return path

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_an_unwritable_output_or_registry_is_one_line_exit_2_before_any_work(
    rides, tmp_path, immutable, model_registry, capsys
):
    from pipelines import predict, train

    output = tmp_path / "out"
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    before = tree_hashes(output)
    immutable(output)
    capsys.readouterr()
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert line == (
        f"preprocess: error: output {output} cannot be written (Operation not permitted): pass another --output"
    )
    assert "->" not in err and tree_hashes(output) == before  # stopped before the pipeline started

    predictions = immutable(tmp_path / "predictions")
    assert predict.main(["--input", str(rides), "--output", str(predictions), "--registry", model_registry]) == 2
    assert capsys.readouterr().err.strip() == (
        f"python -m pipelines.predict: error: output {predictions} cannot be "
        "written (Operation not permitted): pass another --output"
    )

    registry_dir = immutable(tmp_path / "registry")
    code = train.main(
        ["--train", str(output / "train-*.csv"), "--val", str(output / "val-*.csv"), "--registry", str(registry_dir)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        f"python -m pipelines.train: error: {registry_dir} cannot be written (Operation not permitted)"
    )


def test_an_old_run_folder_that_cannot_be_removed_is_a_warning_and_the_new_run_is_published(
    rides, tmp_path, immutable, capsys
):
    output = tmp_path / "out"
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    old = outputs.read_manifest(str(output))["run"]
    immutable(output / old)
    capsys.readouterr()
    assert preprocess.main(["--input", str(rides), "--output", str(output)]) == 0
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "warning" in line]
    assert line.startswith(f"preprocess: warning: could not remove the old run folder {output / old} (")
    assert line.endswith("the new run is published: remove it by hand")
    assert outputs.read_manifest(str(output))["run"] != old
    assert len(reader.shard_paths(str(output / "train-*.csv"))) == 1


# --- readers, wrong shapes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '"x"',
        '{"output": "run-x"}',
        '{"output": {"run": "r", "files": ["a"]}}',
        '{"output": {"run": "r", "files": {"../../etc/passwd": 1}}}',
    ],
)
def test_a_wrong_shape_summary_is_an_unreadable_one(tmp_path, text):
    (tmp_path / "train-00000-of-00001.csv").write_text("stale\n")  # a glob would find it
    (tmp_path / "summary.json").write_text(text)
    with pytest.raises(reader.ShardError, match="is not a summary this project writes") as error:
        reader.shard_paths(str(tmp_path / "train-*.csv"))
    assert "\n" not in str(error.value)


def test_a_reader_keeps_its_run_folder_while_a_new_run_publishes_into_the_same_output(rides, tmp_path, capsys):
    """A trainer streaming OUTPUT/train-*.csv while preprocessing re-runs into OUTPUT reads the old run to its end."""
    output = tmp_path / "out"
    args = ["--input", str(rides), "--output", str(output), "--num_shards", "3"]
    assert preprocess.main(args) == 0
    first = json.loads((output / "summary.json").read_text())
    chunks = reader.iter_chunks(str(output / "train-*.csv"), chunk_size=10, prefetch=0)
    rows = len(next(chunks)[1])
    capsys.readouterr()
    assert preprocess.main(args) == 0  # publishes a new run while the reader is on the first shard
    assert f"kept {output / first['output']['run']}: a reader is still using it" in capsys.readouterr().err
    rows += sum(len(fares) for _, fares in chunks)
    assert rows == first["train_rows"]
    assert (output / first["output"]["run"]).exists()
    assert preprocess.main(args) == 0  # the reader is done: the next run removes the old folder
    assert not (output / first["output"]["run"]).exists()


def test_a_shard_removed_under_a_reader_without_lease_is_one_line(tmp_path):
    for i in range(2):
        (tmp_path / f"train-0000{i}-of-00002.csv").write_text(",".join(["1"] * 66) + "\n")
    chunks = reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=1, prefetch=0)
    next(chunks)
    (tmp_path / "train-00001-of-00002.csv").unlink()
    with pytest.raises(
        reader.ShardError, match="train-00001-of-00002.csv is gone: the shards changed while they were read"
    ):
        list(chunks)


# --- the drift gate, an empty validation split ----------------------------------------------


def test_fail_on_drift_keeps_the_drifted_run_unpublished_and_the_previous_one_published(rides, tmp_path):
    output = tmp_path / "out"
    assert run_cli("--input", str(rides), "--output", str(output)).returncode == 0
    first = outputs.read_manifest(str(output))["run"]
    published = tree_hashes(output)
    frame = generate.generate_rides(400, seed=3)
    frame["fare_amount"] = frame["fare_amount"] * 1.5
    drifted = tmp_path / "drifted" / "rides.csv"
    drifted.parent.mkdir()
    frame.to_csv(drifted, index=False)
    done = run_cli("--input", str(drifted), "--output", str(output), "--fail_on_drift", "--compare_to", str(output))
    assert done.returncode == 3, done.stderr[-2000:]
    assert "FLAGGED fare_amount" in done.stdout
    [line] = [line for line in done.stderr.splitlines() if "error" in line]
    assert "drift flagged (fare_amount) with --fail_on_drift: this run is NOT published" in line
    assert outputs.read_manifest(str(output))["run"] == first
    assert {k: v for k, v in tree_hashes(output).items() if k in published} == published
    [kept] = [p for p in output.iterdir() if p.is_dir() and p.name != first]
    report = (kept / "report.html").read_text()
    assert "This run was NOT published" in report and "--fail_on_drift" in report
    assert json.loads((kept / "summary.json").read_text())["not_published"].startswith("drift flagged (fare_amount)")
    # Without the flag nothing changes: the drifted run is published (exit 0).
    done = run_cli("--input", str(drifted), "--output", str(output), "--compare_to", str(output))
    assert done.returncode == 0 and outputs.read_manifest(str(output))["run"] not in (first, kept.name)


def test_an_empty_validation_split_publishes_with_a_loud_warning(rides, tmp_path):
    output = tmp_path / "out"
    done = run_cli("--input", str(rides), "--output", str(output), "--val_start", "2015-01-01", "--fail_on_drift")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "preprocess: WARNING: the validation split is EMPTY: no kept ride from --val_start 2015-01-01 on; "
        "drift (val against train) could not be measured, so --fail_on_drift checked nothing"
    )
    assert json.loads((output / "summary.json").read_text())["val_rows"] == 0


# --- one way to name a run -------------------------------------------------------------------


def test_registry_and_output_runs_are_named_by_one_function_and_old_registry_names_still_read(tmp_path):
    from taxifare_core.training import registry

    old = ["20261126T091500.123456Z", "20261126T091500.123456Z-2", "20261126T091500.123456Z-10"]
    for name in old:
        (tmp_path / name).mkdir()
        (tmp_path / name / registry.METRICS_FILE).write_text("{}")
        (tmp_path / name / registry.MODEL_FILE).write_text("x")
    new = Path(registry.new_run(str(tmp_path))).name
    (tmp_path / new / registry.METRICS_FILE).write_text("{}")
    (tmp_path / new / registry.MODEL_FILE).write_text("x")
    assert registry.run_names(str(tmp_path)) == [*old, new]
    pattern = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}"
    import re

    assert re.fullmatch(pattern, new) and re.fullmatch("run-" + pattern, outputs.new_run_name())
    assert new.split("-")[0] <= outputs.run_id().split("-")[0]


def test_a_trainer_finishes_on_its_shards_while_preprocessing_publishes_into_their_folder(rides, tmp_path, capsys):
    from pipelines import train

    output = tmp_path / "out"
    args = ["--input", str(rides), "--output", str(output), "--num_shards", "3"]
    assert preprocess.main(args) == 0
    first = json.loads((output / "summary.json").read_text())
    republished = []

    def republish(stage, chunk, model):
        if (stage, chunk) == ("end", 1):  # the next shards are still to be opened
            assert preprocess.main(args) == 0
            republished.append(outputs.read_manifest(str(output))["run"])

    metrics = train.run(
        train.parse_args(
            [
                *train_flags(output, tmp_path / "registry"),
                "--chunk_size",
                "30",
                "--max_epochs_per_chunk",
                "1",
                "--seed",
                "1",
            ]
        ),
        on_chunk=republish,
    )
    assert republished and republished[0] != first["output"]["run"]
    assert metrics["rows"] == first["train_rows"]  # the whole first run, not a mix
    assert f"kept {output / first['output']['run']}: a reader is still using it" in capsys.readouterr().err
