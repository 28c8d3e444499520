"""The pipeline as Dataflow's workers run it: Beam's portable runner, workers with only what the job ships.

    .venv/bin/python -m pytest tests/test_portable.py -q               # e2e: builds the worker venv once (~1.5 min)
    .venv/bin/python -m pytest tests/test_portable.py -q -m "not slow"

What scripts/portable_run.py found, each kept from coming back: relative --input/--output
resolved by the workers against their own folder; a runner without metrics must not
publish made-up counts nor delete the finished run; a worker must refuse an sdist other
than the one its environment holds.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines import preprocess
from pipelines.preprocessing.options import parse_args, resolve_config
from taxifare_core.ride_shards import write_ride_shards

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    """A script of scripts/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


portable_worker = _load_script("portable_worker")


def test_relative_input_and_output_are_resolved_on_the_submitting_machine(tmp_path, monkeypatch):
    """Workers run in their own folder: a relative path must reach them absolute, or they read nothing."""
    monkeypatch.chdir(tmp_path)
    config = resolve_config(*parse_args(["--input", "rides/*.csv", "--output", "out/processed/"]))
    assert config.input == str(tmp_path / "rides" / "*.csv")
    assert config.output == str(tmp_path / "out" / "processed")
    remote = resolve_config(*parse_args(["--input", "gs://b/rides/*.csv", "--output", "gs://b/out/"]))
    assert (remote.input, remote.output) == ("gs://b/rides/*.csv", "gs://b/out")


def test_batch_prediction_resolves_relative_paths_before_the_workers_see_them(tmp_path, monkeypatch):
    from pipelines import batch_predict
    from taxifare_core.training import registry

    monkeypatch.chdir(tmp_path)
    with pytest.raises(registry.NoModelError, match=f"no model in {tmp_path / 'models'}"):
        batch_predict.run("rides/*.csv", "predictions", registry_dir="models")


class _ResultWithoutMetrics:
    """A finished run's result that, like Beam's Dask runner's, raises NotImplementedError for metrics."""

    def __init__(self, result):
        self._result = result

    @property
    def state(self):
        return self._result.state

    def wait_until_finish(self, duration=None):
        return self._result.wait_until_finish(duration)

    def metrics(self):
        raise NotImplementedError("collecting metrics will come later!")  # DaskRunnerResult's words


class NoMetricsRunner(FnApiRunner):
    """Beam's in-process runner (it really writes the files) with a result that has no metrics."""

    def run_pipeline(self, pipeline, options):
        return _ResultWithoutMetrics(super().run_pipeline(pipeline, options))


def test_a_runner_without_metrics_publishes_nothing_and_keeps_the_finished_files(tmp_path, capsys):
    write_ride_shards(tmp_path / "rides", 2_000, num_shards=1)
    output = tmp_path / "processed"
    code = preprocess.main(
        [
            "--input",
            str(tmp_path / "rides" / "*.csv"),
            "--output",
            str(output),
            "--runner",
            f"{__name__}.NoMetricsRunner",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("preprocess: error:")]
    assert len(errors) == 1 and "reports no metrics" in errors[0] and "Traceback" not in err
    assert not (output / "summary.json").exists()  # zeros are not counts: nothing published
    run_dirs = list(output.glob("run-*"))
    assert len(run_dirs) == 1 and str(run_dirs[0]) in errors[0]
    assert list(run_dirs[0].glob("train-*.csv")) and sum(p.stat().st_size for p in run_dirs[0].glob("train-*"))


def _sdist(files: dict[str, bytes], mtime: int) -> bytes:
    """A .tar.gz holding `files`, every member stamped `mtime`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"taxifare-0.1.0/{name}")
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_worker_refuses_an_sdist_other_than_its_environments(tmp_path):
    files = {"pipelines/preprocess.py": b"print(1)\n", "PKG-INFO": b"Name: taxifare\n"}
    built = portable_worker.sdist_digest(_sdist(files, 1))
    assert portable_worker.sdist_digest(_sdist(files, 2)) == built  # a rebuild of the same tree
    staged = tmp_path / "workflow.tar.gz"
    staged.write_bytes(_sdist({**files, "pipelines/preprocess.py": b"print(2)\n"}, 1))
    with pytest.raises(SystemExit, match="sdist differs"):
        portable_worker.check_staged({"workflow.tar.gz": str(staged)}, {"sdist_digest": built})
    staged.write_bytes(_sdist(files, 3))
    portable_worker.check_staged({"workflow.tar.gz": str(staged)}, {"sdist_digest": built, "requirements": None})
    with pytest.raises(SystemExit, match="requirements"):
        portable_worker.check_staged(
            {"workflow.tar.gz": str(staged)}, {"sdist_digest": built, "requirements": "tensorflow\n"}
        )
    with pytest.raises(SystemExit, match="no workflow.tar.gz"):
        portable_worker.check_staged({}, {"sdist_digest": built})


def _portable_run(output: Path, dirty: int, workers: int) -> list[str]:
    """scripts/portable_run.py on `dirty` generated rides with some bad lines, `workers` worker processes."""
    return [
        sys.executable,
        str(ROOT / "scripts" / "portable_run.py"),
        "--dirty",
        str(dirty),
        "--workers",
        str(workers),
        "--output",
        str(output),
    ]


@pytest.mark.slow
@pytest.mark.e2e
def test_portable_run_on_dirty_input_equals_the_in_process_run(tmp_path):
    """The whole path: worker venv from PyPI (cached), job service, worker pool, boot, two runs compared."""
    done = subprocess.run(
        _portable_run(tmp_path / "out", dirty=400, workers=2),
        capture_output=True,
        text=True,
        timeout=2400,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "portable run = in-process run" in done.stdout
    for family in ("train", "val", "errors"):
        assert f"{family} rows" in done.stdout and "DIFFERENT" not in done.stdout
    summary = json.loads((tmp_path / "out" / "portable" / "summary.json").read_text())
    assert summary["bad_input"] > 0 and summary["balanced"]  # the dirty lines reached the dead letter
    assert summary["config"]["runner"] == "PortableRunner"
    # The workers ran the package from their environment, not from this checkout.
    # The last one named: a build first names the older environments it removed from the cache.
    environment = re.findall(r"worker environment (/\S+)", done.stderr)[-1]
    probe = subprocess.run(
        [
            f"{environment}/venv/bin/python",
            "-c",
            "import importlib.util as u, pipelines; print(pipelines.__file__); print(u.find_spec('tensorflow'))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
    )
    located, tensorflow = probe.stdout.split()
    assert located.startswith(f"{environment}/venv/") and "site-packages" in located, located
    assert tensorflow == "None"
    assert list((tmp_path / "out" / "services" / "workers").glob("*/staged/workflow.tar.gz"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.e2e
def test_ctrl_c_stops_the_job_service_and_the_worker_pool(tmp_path):
    """Interrupted while the services run, the script stops both by their pids and exits 130."""
    process = subprocess.Popen(
        _portable_run(tmp_path / "out", dirty=200, workers=1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        pids = []
        deadline = time.monotonic() + 1800  # the worker environment may be built first
        for line in process.stderr:
            if "worker pool" in line and "pids" in line:
                pids = [int(p) for p in line.rsplit("(pids ", 1)[1].rstrip(")\n").split(", ")]
                break
            assert time.monotonic() < deadline
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
        assert "interrupted; services stopped" in process.stderr.read()
        assert not any(_alive(pid) for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
