"""Real runs stopped by Ctrl-C, SIGTERM, the file-size limit or a full disk: one line, the documented exit code,
the previous output intact, no unfinished run folder, the lock free, no worker process left (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shard_helpers import train_flags
from taxifare_core import generate
from taxifare_core.storage import outputs
from taxifare_core.training import registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIG_RIDES = 150_000  # long enough to be stopped while it writes


def _env(work: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOCAL_DATA_PATH": str(work / "data"),
        "LOCAL_REGISTRY_PATH": str(work / "registry"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def _run(work: Path, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a job to its end (10 min at most) in the work folder's environment; its output captured as text."""
    return subprocess.run(
        command, cwd=ROOT, env=_env(work), capture_output=True, text=True, timeout=600, check=False, **kwargs
    )


def _start(work: Path, command: list[str]) -> subprocess.Popen:
    """Start a job in the work folder's environment, its stdout and stderr piped as text."""
    return subprocess.Popen(
        command, cwd=ROOT, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _preprocess(work: Path, rides: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.preprocess", "--input", str(rides), "--output", str(output), *extra]


def _predict(work: Path, rides: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.predict",
        "--input",
        str(rides),
        "--output",
        str(output),
        "--registry",
        str(work / "registry"),
        *extra,
    ]


def _train(work: Path, *extra: str) -> list[str]:
    processed = work / "small_out"
    return [
        sys.executable,
        "-m",
        "pipelines.train",
        *train_flags(processed, work / "registry"),
        "--seed",
        "1",
        *extra,
    ]


def _published(folder: Path) -> dict[str, str]:
    """summary.json and every file the manifest lists, hashed."""
    manifest = outputs.read_manifest(str(folder))
    paths = [folder / outputs.SUMMARY_FILE, *(folder / rel for rel in manifest["files"])]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _unpublished(folder: Path) -> list[str]:
    """Entries of an output folder other than the published run and its summary."""
    keep = {outputs.read_manifest(str(folder))["run"], outputs.SUMMARY_FILE}
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Rides (small and big), a published preprocessing output, a tiny model and a published batch prediction."""
    work = tmp_path_factory.mktemp("signals")
    (work / "rides").mkdir()
    generate.generate_rides(3000, seed=1).to_csv(work / "rides" / "small.csv", index=False)
    generate.generate_rides(BIG_RIDES, seed=2).to_csv(work / "rides" / "big.csv", index=False)

    def run(command: list[str]) -> None:
        done = _run(work, command)
        assert done.returncode == 0, done.stderr[-3000:]

    run(_preprocess(work, work / "rides" / "small.csv", work / "small_out"))
    run(_preprocess(work, work / "rides" / "small.csv", work / "out"))
    run(_train(work, "--chunk_size", "2000", "--max_epochs_per_chunk", "1"))
    # One epoch on 3,000 rides rarely beats the baseline, so it is not blessed: promote it by hand, as a person
    # would to serve it anyway (these tests are about signals, not about the model).
    latest = registry.run_names(str(work / "registry"))[-1]
    run(
        [sys.executable, "-m", "pipelines.registry", "--registry", str(work / "registry"), "promote", latest, "--force"]
    )
    run(_predict(work, work / "rides" / "small.csv", work / "pred"))
    return work


def _wait_for_new_run_folder(folder: Path, proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll until a run folder other than the published one appears (the run is writing); False if it ended."""
    published = outputs.read_manifest(str(folder))["run"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(outputs.RUN_PREFIX) and p.name != published for p in folder.iterdir()):
            return True
        time.sleep(0.02)
    return False


def _stop_while_writing(command: list[str], folder: Path, env: dict, signum: int, workers: bool = False):
    """Start a run, send `signum` once its run folder exists (and, with `workers`, once its worker
    processes run); (exit code, stderr, the descendants it had)."""
    before = _published(folder)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for_new_run_folder(folder, proc), "the run ended before it wrote anything: use more rides"
        time.sleep(0.3)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        # The run folder is made before the pipeline starts; Beam spawns its workers later (seconds on a busy machine).
        deadline = time.monotonic() + 60
        while workers and not descendants and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _published(folder) == before, "the previous output changed"
    return proc.returncode, stderr, descendants


def _assert_one_line_ending(stderr: str, expected: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].endswith(expected), stderr[-3000:]


def _assert_nothing_left(folder: Path, descendants: list) -> None:
    assert not [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert _unpublished(folder) == []  # no unfinished run folder, no _LOCK.json
    time.sleep(2.5)  # a worker left behind would still be writing into the run folder now
    assert _unpublished(folder) == []


def test_ctrl_c_on_preprocess_is_one_line_130_output_intact_lock_free(work):
    out = work / "out"
    code, stderr, descendants = _stop_while_writing(
        _preprocess(work, work / "rides" / "big.csv", out), out, _env(work), signal.SIGINT
    )
    assert code == 130, stderr[-3000:]
    _assert_one_line_ending(stderr, "interrupted (SIGINT); " + f"{out} keeps its last published run")
    _assert_nothing_left(out, descendants)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_multi_processing_workers_are_stopped_before_exit(work, signum, code):
    out = work / "out"
    command = _preprocess(
        work, work / "rides" / "big.csv", out, "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"
    )
    # To the launcher alone: without the wrapper the workers would write on into the run folder.
    got, stderr, descendants = _stop_while_writing(command, out, _env(work), signum, workers=True)
    assert got == code, stderr[-3000:]
    assert descendants, "multi_processing started no worker process"
    _assert_one_line_ending(stderr, f"({signal.Signals(signum).name}); {out} keeps its last published run")
    _assert_nothing_left(out, descendants)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_batch_prediction_stopped_is_one_line_output_intact(work, signum, code):
    pred = work / "pred"
    got, stderr, descendants = _stop_while_writing(
        _predict(work, work / "rides" / "big.csv", pred), pred, _env(work), signum
    )
    assert got == code, stderr[-3000:]
    _assert_one_line_ending(stderr, f"({signal.Signals(signum).name}); {pred} keeps its last published run")
    _assert_nothing_left(pred, descendants)


def _file_size_limit(limit: int):
    def limit_writes():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing

    return limit_writes


@pytest.mark.parametrize("job", ["preprocess", "predict", "train"])
def test_file_size_limit_is_one_line_exit_1_previous_output_intact(work, job):
    folder = {"preprocess": work / "out", "predict": work / "pred", "train": work / "registry"}[job]
    if job == "train":
        before = {
            name: (folder / name / registry.METRICS_FILE).read_bytes() for name in registry.run_names(str(folder))
        }
        command = _train(work, "--chunk_size", "2000", "--max_epochs_per_chunk", "1")
    else:
        before = _published(folder)
        maker = _preprocess if job == "preprocess" else _predict
        command = maker(work, work / "rides" / "big.csv", folder)
    done = _run(work, command, preexec_fn=_file_size_limit(30_000))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "file too large" in last and "[Errno 27] EFBIG" in last and str(folder) in last, last
    if job == "train":
        assert {
            name: (folder / name / registry.METRICS_FILE).read_bytes() for name in registry.run_names(str(folder))
        } == before
        assert registry.unfinished_runs(str(folder)) == []  # the first checkpoint failed: no run folder left
    else:
        assert _published(folder) == before
        assert _unpublished(folder) == []


def test_full_disk_is_one_line_exit_1_previous_output_intact(work, tmp_path):
    disk = tmp_path / "tiny_disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True, check=False
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a 1 MB tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        out = disk / "out"
        tiny = tmp_path / "tiny.csv"
        generate.generate_rides(300, seed=3).to_csv(tiny, index=False)
        first = _run(work, _preprocess(work, tiny, out))
        assert first.returncode == 0, first.stderr[-3000:]
        before = _published(out)
        done = _run(work, _preprocess(work, work / "rides" / "big.csv", out))
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert "no space left on device" in last and "[Errno 28] ENOSPC" in last and str(out) in last, last
        assert _published(out) == before
        assert _unpublished(out) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_trainer_offers_resume_only_when_a_checkpoint_exists(work):
    def interrupt_after(line_start: str) -> str:
        proc = _start(work, _train(work, "--chunk_size", "500", "--max_epochs_per_chunk", "5"))
        try:
            for line in proc.stdout:
                if line.startswith(line_start):
                    proc.send_signal(signal.SIGINT)
                    break
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        return stderr.strip().splitlines()[-1]

    before = set(registry.unfinished_runs(str(work / "registry")))
    line = interrupt_after("training on")  # before the first chunk is fitted
    assert "--resume" not in line and "nothing was checkpointed yet" in line, line
    line = interrupt_after("chunk 1:")  # its checkpoint is written
    (started,) = set(registry.unfinished_runs(str(work / "registry"))) - before
    assert line.endswith(f"interrupted (SIGINT); continue with --resume {started}"), line


def test_ctrl_c_while_predict_loads_the_model_is_one_line_130(work):
    """Ctrl-C during start-up (TensorFlow loading, inside main()): one line, not TensorFlow's traceback."""
    proc = _start(work, [sys.executable, "-m", "pipelines.predict", "--registry", str(work / "registry")])
    try:
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and "tensorflow" not in maps.read_text():
            time.sleep(0.01)
        assert proc.poll() is None, "predicted before TensorFlow was seen loading"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr == "python -m pipelines.predict: interrupted (SIGINT)\n", stderr[-3000:]
