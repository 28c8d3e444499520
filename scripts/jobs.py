"""The project's jobs and its server as child processes, for the scripts (and tests) that attack or measure them.

from scripts.jobs import JobFolders, server_url, stop_process
work = JobFolders(Path(scratch), chunk_size=256)
subprocess.run(work.command("preprocess"), cwd=ROOT, env=work.env, check=True)
process = subprocess.Popen(serve_command(str(work.registry)), cwd=ROOT, stdout=subprocess.PIPE, text=True)
url = server_url(process, timeout=120)  # '' when it printed no address in time
stop_process(process)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each job writes: its output folder, or the registry for training.
JOB_FOLDER_ATTRIBUTE = {"preprocess": "processed", "train": "registry", "predict": "predictions"}


class JobFolders:
    """The three jobs' command lines and folders under one work folder (rides in, predictions out).

    Every job runs with this worktree's code first on the path and ~/.lewagon out of reach: its
    default data and registry folders are under the work folder too.
    """

    def lay_out(self, root: Path, chunk_size: int) -> None:
        """Name the folders under root; training reads `chunk_size` rows a chunk."""
        self.root, self.chunk_size = root, chunk_size
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LOCAL_DATA_PATH": str(root / "data"),
            "LOCAL_REGISTRY_PATH": str(root / "registry"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        self.rides = root / "rides" / "rides.csv"
        self.processed, self.train_data = root / "processed", root / "train_data"
        self.registry, self.predictions = root / "registry", root / "predictions"

    def __init__(self, root: Path, chunk_size: int):
        self.lay_out(root, chunk_size)
        self.model_run = ""

    def command(self, job: str, output: Path | None = None, resume: bool = False) -> list[str]:
        """The job's command line: its default folder unless `output` (training always writes to the registry)."""
        python = [sys.executable, "-m"]
        if job == "preprocess":
            return [
                *python,
                "pipelines.preprocess",
                "--input",
                str(self.rides),
                "--output",
                str(output or self.processed),
                "--num_shards",
                "2",
            ]
        if job == "train":
            if resume:
                return [*python, "pipelines.train", "--resume", "--registry", str(self.registry)]
            return [
                *python,
                "pipelines.train",
                *train_flags(self.train_data, self.registry),
                "--chunk_size",
                str(self.chunk_size),
                "--max_epochs_per_chunk",
                "2",
                "--seed",
                "1",
            ]
        return [
            *python,
            "pipelines.predict",
            "--input",
            str(self.rides),
            "--output",
            str(output or self.predictions),
            "--registry",
            str(self.registry),
            "--run",
            self.model_run,
        ]

    def folder(self, job: str) -> Path:
        """Where the job writes: its output folder, or the registry for training."""
        return getattr(self, JOB_FOLDER_ATTRIBUTE[job])


def train_flags(folder, registry_dir, *extra: str) -> list[str]:
    """`python -m pipelines.train` flags: train on a preprocessing output folder's shards (a path or a URL),
    save the run into registry_dir."""
    return ["--train", f"{folder}/train-*.csv", "--val", f"{folder}/val-*.csv", "--registry", str(registry_dir), *extra]


def serve_command(*flags: str) -> list[str]:
    """`python -m pipelines.serve FLAGS` (`--port 0`: it prints the free port it took)."""
    return [sys.executable, "-m", "pipelines.serve", *flags]


def server_url(process: subprocess.Popen, timeout: float) -> str:
    """The base URL a starting server prints on its first stdout line, or '' when it printed none in time."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    return "http://" + line.split("http://", 1)[1].split()[0] if "http://" in line else ""


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process by its PID: SIGTERM, then SIGKILL if it lingers past `timeout` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_or_kill_group(process: subprocess.Popen, timeout: float) -> int | None:
    """The process's exit code; None when it still ran after `timeout` s (then its whole group is SIGKILLed).

    The process must lead its own group (`start_new_session=True`): Beam's worker processes go with it.
    """
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


class TreePeak:
    """The peak summed RSS of a process and all its descendants (Beam's workers too), sampled in a thread.

        process = psutil.Popen(command)
        with TreePeak(process, interval=0.2) as peak:
            process.wait()
        peak.rss      # bytes
        peak.samples  # [(seconds since the start, bytes), ...]: memory over time

    `also`, when given, is called at every sample (e.g. to sample the size of a temp folder).
    psutil has no peak for a whole tree (a dead child's RSS is gone), hence the sampling.
    """

    def __init__(self, process, interval: float, also: Callable[[], None] | None = None):
        self.process, self.interval, self.also = process, interval, also
        self.rss, self.samples, self._done = 0, [], threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def tree_rss(self) -> int:
        """The summed RSS now (members that exit while summed count 0)."""
        import psutil

        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for member in tree:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._done.is_set():
            rss = self.tree_rss()
            self.rss = max(self.rss, rss)
            self.samples.append((time.perf_counter() - self._started, rss))
            if self.also is not None:
                self.also()
            self._done.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(this script's flags, the flags after `--` for the pipeline); argv None: sys.argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]
