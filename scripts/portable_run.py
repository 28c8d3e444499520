"""Run a pipeline through Beam's portable runner with workers that have only what the job ships.

    python scripts/portable_run.py --input '../shared/data/*.csv' --output /tmp/portable
    python scripts/portable_run.py --dirty 3000 --output /tmp/portable-dirty --workers 2
    python scripts/portable_run.py --job predict --input 'rides/*.csv' --output /tmp/pp --registry REG [--run RUN]
    make portable

What a Dataflow Runner v2 worker gets, built locally: a fresh virtual environment holding
Apache Beam (the submitter's version) and this project's sdist (built as Beam's stager
builds it for --setup_file) with its dependencies; for --job predict also
requirements-predict.txt (TensorFlow). Nothing else: no editable install, no checkout on
the path. It is cached under --cache, keyed by the sdist's contents, the Beam and Python
versions and the requirements. Beam's local job service and worker pool run from it on
loopback; each worker boots as a Dataflow worker does (scripts/portable_worker.py boot):
the job's pipeline options from the provision service, the staged sdist fetched and
checked against the environment's, then Beam's SDK harness in a folder of its own.

The job runs with `--runner PortableRunner --environment_type EXTERNAL --setup_file
pyproject.toml`, and once more in process (the project's default runner, the
DirectRunner's engine) on the same input. Their published outputs are compared row by row
(sorted) and their counts one by one; exit 0 when all are equal, 1 when something differs
or a run fails, 2 for a bad flag. Services are stopped by their process ids, also on failure
or Ctrl-C (and stop by themselves if this script is killed). Logs: OUTPUT/logs/.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
# Runnable from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

from pipelines.cli import OneLineErrorParser, positive_int  # noqa: E402
from scripts.jobs import split_passthrough  # noqa: E402
from taxifare_core.storage import outputs  # noqa: E402

sys.path.insert(0, str(SCRIPTS))
from portable_worker import sdist_digest  # noqa: E402

PROG = "portable_run.py"
JOBS = ("preprocess", "predict")
PREDICT_REQUIREMENTS = ROOT / "requirements-predict.txt"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taxifare" / "portable"
COMPLETE = "complete.json"  # written last into a worker environment: it is whole
KEEP_ENVIRONMENTS = 3  # besides the one being built: a preprocess and a predict one survive a code change
SERVICE_START_SECONDS = 120
STOP_SECONDS = 10
PIP_SECONDS = {"preprocess": 20 * 60, "predict": 45 * 60}
RUN_SECONDS = 30 * 60
# The counts of summary.json both runs must agree on.
PREPROCESS_COUNTS = (
    "rows_read",
    "bad_input",
    "dropped",
    "dropped_total",
    "duplicates",
    "train_rows",
    "val_rows",
    "balanced",
)
PREDICT_COUNTS = ("predicted", "dead_letter")
HEADED_FAMILIES = ("raw", "predictions", "dead_letter")  # shard families written with a header line


class PortableError(RuntimeError):
    """A step failed; the message is one line (logs are named in it)."""


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """This script's flags; what follows `--` goes to both runs of the pipeline."""
    argv, extra = split_passthrough(argv)
    parser = OneLineErrorParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Flags after `--` pass to the pipeline in both runs, e.g. `-- --dedupe global`.",
    )
    parser.add_argument(
        "--job",
        choices=JOBS,
        default="preprocess",
        help="preprocess (default) or predict (batch prediction; workers get TensorFlow)",
    )
    parser.add_argument("--input", default=None, metavar="GLOB", help="ride CSVs with a header")
    parser.add_argument(
        "--dirty",
        type=positive_int,
        default=None,
        metavar="ROWS",
        help="instead of --input: ROWS generated rides with every malformed-line kind of "
        "scripts/fuzz_inputs.py mixed in, written to OUTPUT/input/dirty.csv",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="a new or scratch folder: OUTPUT/direct, OUTPUT/portable, OUTPUT/logs",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="SDK worker processes (default 2)")
    parser.add_argument("--registry", default=None, help="--job predict: the model registry (default: the local one)")
    parser.add_argument("--run", default=None, help="--job predict: the registry run (default: the latest)")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="where worker environments are kept (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if (args.input is None) == (args.dirty is None):
        parser.error("give either --input GLOB or --dirty ROWS")
    if args.job == "preprocess" and (args.registry or args.run):
        parser.error("--registry and --run belong to --job predict")
    return args, extra


# --- the worker environment ------------------------------------------------------------------------------


def build_sdist(folder: Path) -> Path:
    """This project's sdist, built as Beam's stager builds it for --setup_file pyproject.toml."""
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(folder), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    built = sorted(folder.glob("*.tar.gz"))
    if done.returncode or len(built) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PortableError(f"building the sdist failed: {tail[0]}")
    return built[0]


def environment_key(digest: str, beam_version: str, requirements: str | None) -> str:
    """The cache key of a worker environment: sdist contents, Beam and Python versions, requirements."""
    parts = [digest, beam_version, ".".join(map(str, sys.version_info[:2])), requirements or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def worker_environment(sdist: Path, requirements: str | None, cache: Path, log: Path, job: str) -> Path:
    """The cached worker environment for this sdist (built when missing): a folder with venv/ and expect.json."""
    import apache_beam

    digest = sdist_digest(sdist.read_bytes())
    folder = cache / f"worker-{environment_key(digest, apache_beam.__version__, requirements)}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs never build one environment at once
        if (folder / COMPLETE).is_file():
            (folder / COMPLETE).touch()  # last used: what prune_cache keeps
            print(f"{PROG}: worker environment {folder} (cached)", file=sys.stderr)
            return folder
        prune_cache(cache)
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted build
        print(
            f"{PROG}: building the worker environment {folder} (Beam {apache_beam.__version__}, the sdist"
            f"{', requirements-predict.txt' if requirements else ''}; pip log: {log})",
            file=sys.stderr,
        )
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True, timeout=300)
        command = [
            str(folder / "venv" / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-input",
            f"apache-beam[gcp]=={apache_beam.__version__}",
            str(sdist),
        ]
        if requirements is not None:
            (folder / "requirements.txt").write_text(requirements)
            command += ["-r", str(folder / "requirements.txt")]
        with open(log, "w") as handle:
            done = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, timeout=PIP_SECONDS[job], env=_clean_env()
            )
        if done.returncode:
            raise PortableError(f"pip could not build the worker environment (see {log})")
        (folder / "expect.json").write_text(
            json.dumps(
                {"sdist_digest": digest, "requirements": requirements, "beam": apache_beam.__version__}, indent=2
            )
        )
        (folder / COMPLETE).write_text(json.dumps({"seconds": round(time.monotonic() - started, 1)}))
        print(f"{PROG}: worker environment built in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return folder


def prune_cache(cache: Path, keep: int = KEEP_ENVIRONMENTS) -> None:
    """Remove all but the `keep` most recently used worker environments (about 1 GB each, 3 with TensorFlow)."""
    built = sorted(
        (p for p in cache.glob("worker-*") if (p / COMPLETE).is_file()),
        key=lambda p: (p / COMPLETE).stat().st_mtime,
        reverse=True,
    )
    for old in built[keep:]:
        (old / COMPLETE).unlink()  # first: a half-removed environment is never taken for whole
        shutil.rmtree(old, ignore_errors=True)
        print(f"{PROG}: removed the older worker environment {old}", file=sys.stderr)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the checkout or the submitter's venv on any path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


# --- the services ----------------------------------------------------------------------------------------


class Services:
    """Beam's job service and worker pool, started from the worker environment; stopped by their pids."""

    def __init__(self, environment: Path, workdir: Path, logs: Path):
        self.environment, self.workdir, self.logs = environment, workdir, logs
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, *args: str) -> int:
        port_file = self.workdir / f"{name}.port"
        with open(self.logs / f"{name}.log", "w") as log:
            # A session of its own: Ctrl-C reaches this script, which stops the service itself.
            self.processes[name] = process = subprocess.Popen(
                [
                    self.python,
                    str(self.worker_script),
                    name,
                    "--port_file",
                    str(port_file),
                    "--parent",
                    str(os.getpid()),
                    *args,
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_clean_env(),
            )
        deadline = time.monotonic() + SERVICE_START_SECONDS
        while not port_file.exists():
            if process.poll() is not None:
                raise PortableError(
                    f"the {name} service exited with code {process.returncode} (see {self.logs / f'{name}.log'})"
                )
            if time.monotonic() > deadline:
                raise PortableError(f"the {name} service did not start within {SERVICE_START_SECONDS} s")
            time.sleep(0.1)
        return int(port_file.read_text())

    def start(self) -> tuple[int, int]:
        """(job service port, worker pool port), both on loopback."""
        workers = self.workdir / "workers"
        workers.mkdir(parents=True, exist_ok=True)
        # The worker side runs from a copy outside the checkout, with the environment's Python.
        self.python = str(self.environment / "venv" / "bin" / "python")
        self.worker_script = self.workdir / "portable_worker.py"
        shutil.copy2(SCRIPTS / "portable_worker.py", self.worker_script)
        boot = self.workdir / "boot"
        boot.write_text(
            f'#!/bin/sh\nexec "{self.python}" "{self.worker_script}" boot --worker_root "{workers}" '
            f'--expect "{self.environment / "expect.json"}" "$@"\n'
        )
        boot.chmod(0o755)
        jobs = self._start("jobs", "--staging_dir", str(self.workdir / "staging"))
        pool = self._start("pool", "--boot", str(boot))
        return jobs, pool

    def boot_failure(self) -> str | None:
        """The first line a worker's boot refused to start with (in the pool's log), if any."""
        log = self.logs / "pool.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return next((line for line in text.splitlines() if line.startswith("boot: ")), None)

    def stop(self) -> None:
        """SIGTERM each service by pid (they stop their workers), SIGKILL after STOP_SECONDS."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the runs ------------------------------------------------------------------------------------------


def run_pipeline(module: str, argv: list[str], log: Path, cwd: Path, services: Services | None = None) -> None:
    """`python -m module argv` with the checkout on the path; PortableError (naming the log) if it fails.

    With `services`, a worker that fails to boot stops the run at once (the runner itself
    would wait minutes for the worker to connect).
    """
    with open(log, "w") as handle:
        handle.write(f"$ python -m {module} {' '.join(argv)}\n")
        handle.flush()
        with subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as process:
            deadline = time.monotonic() + RUN_SECONDS
            try:
                while process.poll() is None:
                    failure = services.boot_failure() if services else None
                    if failure or time.monotonic() > deadline:
                        raise PortableError(failure or f"python -m {module} ran over {RUN_SECONDS} s (log: {log})")
                    time.sleep(0.5)
            finally:
                if process.poll() is None:
                    process.kill()
    if process.returncode:
        # The last line that says something: an error line or an exception's, not a traceback's frame.
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if line.strip() and not line[0].isspace() and not line.startswith((">", "Traceback"))
        ]
        raise PortableError(
            f"python -m {module} failed with code {process.returncode}: "
            f"{lines[-1] if lines else 'no output'} (log: {log})"
        )


def portable_flags(jobs_port: int, pool_port: int, workers: int, job: str) -> list[str]:
    """The PortableRunner flags: the local job service, external workers, the package as Dataflow ships it."""
    flags = [
        "--runner",
        "PortableRunner",
        "--job_endpoint",
        f"localhost:{jobs_port}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"127.0.0.1:{pool_port}",
        "--setup_file",
        str(ROOT / "pyproject.toml"),
        "--no_save_main_session",
        "--direct_num_workers",
        str(workers),
    ]
    if job == "predict":
        flags += ["--requirements_file", str(PREDICT_REQUIREMENTS), "--requirements_cache", "skip"]
    return flags


def write_dirty_input(path: Path, rows: int, seed: int = 20) -> str:
    """Generated rides with every malformed-line kind of scripts/fuzz_inputs.py mixed in; the glob to read."""
    import fuzz_inputs

    path.parent.mkdir(parents=True, exist_ok=True)
    base = fuzz_inputs.base_lines(None, rows, seed)
    fuzz_inputs.build_mixed(path, base, list(fuzz_inputs.LINE_KINDS), 1, random.Random(seed))
    return str(path)


# --- the comparison ------------------------------------------------------------------------------------


def published_rows(folder: Path) -> dict[str, list[bytes]]:
    """Each published file family (train, val, errors, raw, predictions, ...) -> its lines, sorted."""
    manifest = outputs.read_manifest(str(folder))
    if manifest is None:
        raise PortableError(f"{folder} has no published output")
    families: dict[str, list[bytes]] = {}
    for rel in manifest["files"]:
        name = rel.rsplit("/", 1)[-1]
        if not name.endswith((".csv", ".jsonl")):
            continue  # stats.json, report.html: computed from the rows compared here
        family = name.split("-", 1)[0]
        lines = (folder / rel).read_bytes().splitlines()
        # Each shard of these repeats the header; runners may cut a different number of shards.
        families.setdefault(family, []).extend(lines[1:] if family in HEADED_FAMILIES else lines)
    return {family: sorted(lines) for family, lines in sorted(families.items())}


def compare(direct: Path, portable: Path, counts: tuple[str, ...]) -> list[str]:
    """The differences between the two published outputs (empty when equal), and print a table."""
    summaries = [json.loads((folder / outputs.SUMMARY_FILE).read_text()) for folder in (direct, portable)]
    problems = []
    print(f"{'':<24}{'in process':>14}{'portable':>14}")
    for name in counts:
        left, right = (summary.get(name) for summary in summaries)
        shown = [json.dumps(v) if isinstance(v, dict) else v for v in (left, right)]
        if isinstance(left, dict):
            print(f"{name:<24}{'(' + str(len(left)) + ' rules)':>14}{'equal' if left == right else 'DIFFERENT':>14}")
        else:
            print(f"{name:<24}{shown[0]!s:>14}{shown[1]!s:>14}")
        if left != right:
            problems.append(f"{name}: {shown[0]} in process, {shown[1]} portable")
    rows = [published_rows(folder) for folder in (direct, portable)]
    for family in sorted(set(rows[0]) | set(rows[1])):
        left, right = rows[0].get(family, []), rows[1].get(family, [])
        same = left == right
        print(f"{family + ' rows':<24}{len(left):>14,}{len(right):>14,}  {'identical' if same else 'DIFFERENT'}")
        if not same:
            problems.append(f"{family}: {len(set(left) ^ set(right))} line(s) differ")
    return problems


def _absolute(path: str | None) -> str | None:
    """A local path made absolute against this process's folder; gs:// and None as they are."""
    return path if path is None or "://" in path else os.path.abspath(os.path.expanduser(path))


def _interrupt(*_) -> None:
    """SIGTERM handler: unwind as Ctrl-C does."""
    raise KeyboardInterrupt


# --- main ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """Build or reuse the worker environment, run both ways, compare."""
    args, extra = parse_args(argv)
    output = Path(args.output).resolve()
    logs, work = output / "logs", output / "services"
    for name in ("direct", "portable", "services"):
        if (output / name).exists():
            shutil.rmtree(output / name)  # this script's own scratch folders from an earlier run
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True)
    # Ctrl-C and SIGTERM both unwind through `finally`, which stops the services.
    signal.signal(signal.SIGTERM, _interrupt)
    services = None
    try:
        # The runs start in OUTPUT: relative paths are the caller's.
        input_glob = (
            _absolute(args.input) if args.input else write_dirty_input(output / "input" / "dirty.csv", args.dirty)
        )
        requirements = PREDICT_REQUIREMENTS.read_text() if args.job == "predict" else None
        with tempfile.TemporaryDirectory() as folder:
            sdist = build_sdist(Path(folder))
            environment = worker_environment(sdist, requirements, args.cache.expanduser(), logs / "pip.log", args.job)
        module = "pipelines.preprocess" if args.job == "preprocess" else "pipelines.predict"
        common = ["--input", input_glob]
        if args.job == "predict":
            common += [
                flag
                for flag, value in (("--registry", _absolute(args.registry)), ("--run", args.run))
                for flag in (flag, value)
                if value
            ]
        started = time.monotonic()
        run_pipeline(module, [*common, "--output", str(output / "direct"), *extra], logs / "direct.log", output)
        direct_seconds = time.monotonic() - started
        services = Services(environment, work, logs)
        jobs_port, pool_port = services.start()
        print(
            f"{PROG}: job service localhost:{jobs_port}, worker pool 127.0.0.1:{pool_port} "
            f"(pids {', '.join(str(p.pid) for p in services.processes.values())})",
            file=sys.stderr,
        )
        started = time.monotonic()
        run_pipeline(
            module,
            [
                *common,
                "--output",
                str(output / "portable"),
                *extra,
                *portable_flags(jobs_port, pool_port, args.workers, args.job),
            ],
            logs / "portable.log",
            output,
            services,
        )
        portable_seconds = time.monotonic() - started
        print(
            f"{args.job} of {input_glob}: in process {direct_seconds:.1f} s, portable ({args.workers} "
            f"worker(s)) {portable_seconds:.1f} s"
        )
        problems = compare(
            output / "direct", output / "portable", PREPROCESS_COUNTS if args.job == "preprocess" else PREDICT_COUNTS
        )
    except PortableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; services stopped", file=sys.stderr)
        return 130
    finally:
        if services is not None:
            services.stop()
    if problems:
        print(f"{PROG}: the portable run differs from the in-process run: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print("portable run = in-process run: same counts, same rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
