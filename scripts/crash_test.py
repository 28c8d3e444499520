"""Crash test: SIGKILL preprocessing, training and batch prediction at random moments; nothing lost, nothing mixed.

    python scripts/crash_test.py                       # 60 kills (20 per job), seeded, bounded time
    python scripts/crash_test.py --kills 6 --rows 1500 # the quick version `make test` runs
    python scripts/crash_test.py --help

Setup, in a temporary folder: generated rides; one good preprocessing output,
one finished training run and one good batch-prediction output. Then, in turn
for each job, a real run is started in its own process group and the whole
group is killed with SIGKILL after a random delay (seeded, uniform over 90 % of
the job's last uninterrupted duration: the setup run's, then that of the last run
that ended before its kill, as the machine's load changes). After each kill:

- preprocessing / batch prediction: the output folder's published set
  (summary.json and the files its manifest lists) is the previous one byte for
  byte, or a new one that is complete (every file present at its listed size)
  and consistent with its summary (train/val rows, priced rides); never a mix.
  The reader must accept it.
- training: every finished registry run is untouched byte for byte and the
  latest finished run is whole (valid metrics.json, a readable model.keras zip);
  an interrupted run is resumed with `--resume` and must finish with the same
  number of rows as the uninterrupted run. Every other training kill comes a
  random moment (under 1 s) after a checkpoint, so resumes are exercised.

Prints one row per kill and a final summary; exit code 1 when any invariant broke.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taxifare_core import generate
from taxifare_core.storage import outputs
from taxifare_core.training import reader, registry

JOBS = ("preprocess", "train", "predict")


def hash_files(paths: list[Path]) -> dict[str, str]:
    """path -> sha256 of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def published_set(folder: Path) -> dict[str, str]:
    """Hashes of an output folder's published set: summary.json and every file its manifest lists."""
    manifest = outputs.read_manifest(str(folder)) or {"files": {}}
    return hash_files([folder / outputs.SUMMARY_FILE, *(folder / rel for rel in manifest["files"])])


def count_lines(paths: list[str], header: bool = False) -> int:
    """Lines in some files (minus one header line per file)."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip()) - (1 if header else 0)
    return total


def check_output(job: str, folder: Path, before: dict[str, str]) -> tuple[str, dict[str, str]]:
    """('old intact' | 'new complete' | 'LOST ...' | 'MIXED ...', the published set now)."""
    try:
        now = published_set(folder)
    except (FileNotFoundError, outputs.IncompleteOutputError) as error:
        return f"LOST ({error})", before
    if now == before:
        return "old intact", now
    summary = json.loads((folder / outputs.SUMMARY_FILE).read_text())
    try:
        if job == "preprocess":
            train = reader.shard_paths(str(folder / "train-*.csv"))
            val = reader.shard_paths(str(folder / "val-*.csv"))
            consistent = (count_lines(train), count_lines(val)) == (summary["train_rows"], summary["val_rows"])
        else:
            priced = outputs.resolve(str(folder / "predictions-*.csv"))
            consistent = count_lines(priced, header=True) == summary["predicted"]
    except (reader.ShardError, outputs.IncompleteOutputError) as error:
        return f"MIXED ({error})", now
    if not consistent:
        return "MIXED (files disagree with summary.json)", now
    return "new complete", now


def finished_runs(registry_dir: Path) -> dict[str, dict[str, str]]:
    """Each finished run's files and their hashes."""
    return {name: hash_files(sorted(p for p in (registry_dir / name).rglob("*") if p.is_file()))
            for name in registry.run_names(str(registry_dir))}


def check_registry(registry_dir: Path, before: dict[str, dict[str, str]]) -> tuple[str, dict]:
    """Finished runs untouched, and the latest finished run whole."""
    now = finished_runs(registry_dir)
    for name, files in before.items():
        if now.get(name) != files:
            return f"LOST (finished run {name} changed)", now
    latest = Path(registry.run_path(registry.latest_run(str(registry_dir)), str(registry_dir)))
    try:
        json.loads((latest / registry.METRICS_FILE).read_text())
        with zipfile.ZipFile(latest / registry.MODEL_FILE) as model:
            if model.testzip() is not None:
                raise zipfile.BadZipFile("corrupt member")
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"MIXED (latest run {latest.name} is half-written: {error})", now
    return ("old intact" if set(now) == set(before) else "new complete"), now


class Crash:
    """The jobs' command lines and folders under one work folder."""

    def __init__(self, work: Path, args: argparse.Namespace):
        self.work, self.args = work, args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LOCAL_DATA_PATH": str(work / "data"),
                    "LOCAL_REGISTRY_PATH": str(work / "registry"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.rides = work / "rides" / "rides.csv"
        self.processed, self.train_data = work / "processed", work / "train_data"
        self.registry, self.predictions = work / "registry", work / "predictions"
        self.model_run: str | None = None

    def command(self, job: str, resume: bool = False, output: Path | None = None) -> list[str]:
        python = [sys.executable, "-m"]
        if job == "preprocess":
            return [*python, "pipelines.preprocess", "--input", str(self.rides),
                    "--output", str(output or self.processed), "--num_shards", "2"]
        if job == "train":
            if resume:
                return [*python, "pipelines.train", "--resume", "--registry", str(self.registry)]
            return [*python, "pipelines.train", "--train", str(self.train_data / "train-*.csv"),
                    "--val", str(self.train_data / "val-*.csv"), "--registry", str(self.registry),
                    "--chunk_size", str(self.args.rows // 4), "--max_epochs_per_chunk", "2", "--seed", "1"]
        return [*python, "pipelines.predict", "--input", str(self.rides), "--output", str(self.predictions),
                "--registry", str(self.registry), "--run", self.model_run]

    def run(self, command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        return done, time.perf_counter() - started

    def run_and_kill(self, job: str, delay: float, after_chunk: int | None = None) -> tuple[float | None, float]:
        """Start the job in its own process group and SIGKILL the whole group.

        The kill comes `delay` s after the start, or, with `after_chunk`, `delay` s
        after the trainer reports that chunk done (its checkpoint written), so
        resumes are exercised. Returns (the kill's time since the start, None if the
        job ended first; the seconds it ran).
        """
        started = time.perf_counter()
        proc = subprocess.Popen(self.command(job), cwd=ROOT, env=self.env, stderr=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if after_chunk else subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            if after_chunk:
                for line in proc.stdout:
                    if line.startswith(f"chunk {after_chunk}:"):
                        break
                else:
                    proc.wait()
                    return None, time.perf_counter() - started
            proc.wait(timeout=delay)
            return None, time.perf_counter() - started
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - started, time.perf_counter() - started
        finally:
            if proc.stdout:
                proc.stdout.close()


def setup(crash: Crash) -> tuple[dict[str, float], int]:
    """Rides, the good outputs and a finished training run; each job's uninterrupted duration and the rows trained."""
    crash.rides.parent.mkdir(parents=True)
    generate.generate_rides(crash.args.rows, seed=crash.args.seed).to_csv(crash.rides, index=False)
    durations = {}
    for folder in (crash.train_data, crash.processed):
        done, durations["preprocess"] = crash.run(crash.command("preprocess", output=folder), 600)
        if done.returncode:
            raise SystemExit(f"setup: preprocessing failed: {done.stderr[-2000:]}")
    done, durations["train"] = crash.run(crash.command("train"), 900)
    if done.returncode:
        raise SystemExit(f"setup: training failed: {done.stderr[-2000:]}")
    crash.model_run = registry.run_names(str(crash.registry))[-1]
    rows = registry.load_metrics(crash.model_run, str(crash.registry))["rows"]
    done, durations["predict"] = crash.run(crash.command("predict"), 600)
    if done.returncode:
        raise SystemExit(f"setup: batch prediction failed: {done.stderr[-2000:]}")
    return durations, rows


def resume_training(crash: Crash, expected_rows: int) -> str:
    """Resume the interrupted training run, if the kill left one; '' when none, else 'rows ok' / 'ROWS x != y'."""
    unfinished = registry.unfinished_runs(str(crash.registry))
    if not unfinished:
        return ""
    done, _ = crash.run(crash.command("train", resume=True), 900)
    if done.returncode:
        return f"RESUME FAILED ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})"
    rows = registry.load_metrics(registry.latest_run(str(crash.registry)), str(crash.registry))["rows"]
    return "resumed, rows ok" if rows == expected_rows else f"RESUMED ROWS {rows} != {expected_rows}"


def litter(folder: Path) -> int:
    """Unpublished run folders and beam-temp folders in an output folder (the next run removes them)."""
    manifest = outputs.read_manifest(str(folder)) or {"run": None}
    return sum(1 for p in folder.iterdir() if p.is_dir() and p.name != manifest["run"]
               and (p.name.startswith(outputs.RUN_PREFIX) or p.name.startswith(outputs.BEAM_TEMP_PREFIX)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs to deliver, shared out over the jobs in turn")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and of the generated rides")
    parser.add_argument("--rows", type=int, default=4000, help="generated rides per run")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated jobs to kill, of " + ", ".join(JOBS))
    parser.add_argument("--time_limit", type=float, default=2400, help="stop starting new kills after this many s")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    jobs = [job for job in args.jobs.split(",") if job]
    if not jobs or set(jobs) - set(JOBS):
        parser.error(f"--jobs must name some of {', '.join(JOBS)}")
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crash_test_") as scratch:
        crash = Crash(Path(args.work or scratch), args)
        durations, expected_rows = setup(crash)
        print("uninterrupted: " + ", ".join(f"{job} {durations[job]:.1f} s" for job in jobs)
              + f"; training rows {expected_rows:,}", flush=True)
        state = {"preprocess": published_set(crash.processed), "predict": published_set(crash.predictions),
                 "train": finished_runs(crash.registry)}
        tally = {job: {"kills": 0, "ended_first": 0, "survived": 0, "broken": 0} for job in jobs}
        resumes = {"resumed": 0, "rows_ok": 0}
        print(f"{'#':>3}  {'job':<10} {'kill at':>8}  {'outcome':<14} {'litter':>6}  note", flush=True)
        attempt = 0
        while sum(t["kills"] for t in tally.values()) < args.kills and time.perf_counter() - started < args.time_limit:
            job = jobs[attempt % len(jobs)]
            attempt += 1
            # Every other training kill comes just after a checkpoint, so `--resume` has work to do.
            after_chunk = rng.randint(1, 3) if job == "train" and tally[job]["kills"] % 2 else None
            # Up to 90% of an uninterrupted run: later, a loaded machine lets most runs end first.
            delay = rng.uniform(0.0, 1.0) if after_chunk else rng.uniform(0.0, 0.9 * durations[job])
            killed_at, ran = crash.run_and_kill(job, delay, after_chunk)
            killed = killed_at is not None
            if not killed and not after_chunk:
                durations[job] = ran  # the machine is shared: aim the next kills at its current speed
            tally[job]["kills" if killed else "ended_first"] += 1
            if job == "train":
                outcome, state["train"] = check_registry(crash.registry, state["train"])
                note = resume_training(crash, expected_rows) if killed else ""
                if note:
                    resumes["resumed"] += 1
                    resumes["rows_ok"] += note == "resumed, rows ok"
                    outcome_after, state["train"] = check_registry(crash.registry, state["train"])
                    if not outcome_after.startswith(("old", "new")):
                        outcome = outcome_after
                spare = "-"
            else:
                folder = crash.processed if job == "preprocess" else crash.predictions
                outcome, state[job] = check_output(job, folder, state[job])
                spare, note = str(litter(folder)), ""
            ok = outcome.startswith(("old intact", "new complete")) and not note.startswith(("RESUME", "RESUMED"))
            if killed:
                tally[job]["survived" if ok else "broken"] += 1
            elif not ok:
                tally[job]["broken"] += 1
            label = f"{killed_at:.2f} s" if killed else "(ended)"
            if after_chunk and killed:
                note = f"after chunk {after_chunk}; {note}".rstrip("; ")
            print(f"{attempt:>3}  {job:<10} {label:>8}  {outcome:<14} {spare:>6}  {note}", flush=True)
        # One more clean run of each output job: it must remove every earlier kill's litter.
        leftovers = {}
        for job in jobs:
            if job != "train":
                folder = crash.processed if job == "preprocess" else crash.predictions
                done, _ = crash.run(crash.command(job), 600)
                leftovers[job] = litter(folder) + int((folder / outputs.LOCK_FILE).exists()) + (done.returncode != 0)
    kills = sum(t["kills"] for t in tally.values())
    survived = sum(t["survived"] for t in tally.values())
    broken = sum(t["broken"] for t in tally.values())
    print()
    print(f"{'job':<10} {'kills':>6} {'survived':>9} {'lost/mixed':>11} {'ended before kill':>18}")
    for job, t in tally.items():
        print(f"{job:<10} {t['kills']:>6} {t['survived']:>9} {t['broken']:>11} {t['ended_first']:>18}")
    print(f"summary: {kills} kills, {survived} survived, {broken} outputs lost or mixed; "
          f"{resumes['resumed']} training runs resumed, {resumes['rows_ok']} with the uninterrupted run's rows; "
          f"litter left after a clean re-run: {sum(leftovers.values())}; seed {args.seed}, "
          f"{time.perf_counter() - started:.0f} s")
    failed = broken or resumes["rows_ok"] != resumes["resumed"] or any(leftovers.values()) or kills < args.kills
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
