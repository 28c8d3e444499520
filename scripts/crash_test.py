"""Crash test: SIGKILL preprocessing, training and batch prediction at random moments; nothing lost, nothing mixed.

    python scripts/crash_test.py                       # 60 kills (20 per job), seeded, bounded time
    python scripts/crash_test.py --kills 6 --rows 1500 # the quick version `make test` runs
    python scripts/crash_test.py --help

Setup, in a temporary folder: generated rides; one good preprocessing output,
one finished training run and one good batch-prediction output. Then, in turn
for each job, a real run is started in its own process group and the whole
group is killed with SIGKILL inside its write/publish window: once its new run
folder exists (training: its registry run folder), after a random delay (seeded,
uniform over 110 % of the window's length: half the setup run at first, then the
window of the last run that published, as the machine's load changes). A kill
before any writing would only find the old output untouched, proving nothing; each
kill records whether the new run folder was really there, and the test goes on
until at least --min_in_window kills (20) did. After each kill:

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

Prints one row per kill and a final summary (kills in the window, how many found a new
published output); exit code 1 when any invariant broke or too few kills landed in a window.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.jobs import JobFolders
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
    return {
        name: hash_files(sorted(p for p in (registry_dir / name).rglob("*") if p.is_file()))
        for name in registry.run_names(str(registry_dir))
    }


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


@dataclass
class Attempt:
    """One start of a job: when it was killed (None: it ended first), how long it ran, when its write
    window opened (its new run folder appeared; None if never), and whether the kill landed in it."""

    killed_at: float | None
    ran: float
    opened: float | None
    in_window: bool
    opened_clock: float | None = None  # time.time() when the window opened, to compare with file times


class Crash(JobFolders):
    """The jobs' command lines and folders under one work folder."""

    def __init__(self, work: Path, args: argparse.Namespace):
        super().__init__(work, chunk_size=args.rows // 4)
        self.work, self.args = work, args

    def run(self, command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return done, time.perf_counter() - started

    def run_folders(self, job: str) -> set[str]:
        """The run folders in the job's output folder (registry runs for training), finished or not."""
        folder = self.folder(job)
        if job == "train":
            return set(registry.run_names(str(folder), finished=False))
        if not folder.is_dir():
            return set()
        return {p.name for p in folder.iterdir() if p.name.startswith(outputs.RUN_PREFIX)}

    def published_at(self, job: str) -> float | None:
        """When the job last published (summary.json written; training: the newest metrics.json), as time.time()."""
        if job == "train":
            paths = list(self.registry.glob(f"*/{registry.METRICS_FILE}"))
        else:
            paths = [self.folder(job) / outputs.SUMMARY_FILE]
        times = [p.stat().st_mtime for p in paths if p.exists()]
        return max(times) if times else None

    def run_and_kill(self, job: str, delay: float, after_chunk: int | None = None) -> Attempt:
        """Start the job in its own process group and SIGKILL the whole group inside its write window.

        The window opens when the job's new run folder exists (training: the trainer's
        `run ...` line, printed once its registry folder is made); the kill comes `delay`
        s later, or, with `after_chunk`, `delay` s after the trainer reports that chunk
        done (its checkpoint written), so resumes are exercised. Whether a new run folder
        was really there when the kill was sent is checked, not assumed.
        """
        started = time.perf_counter()
        before = self.run_folders(job)
        proc = subprocess.Popen(
            self.command(job),
            cwd=ROOT,
            env=self.env,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.PIPE if job == "train" else subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            if job == "train":
                marker = f"chunk {after_chunk}:" if after_chunk else "run "
                for line in proc.stdout:
                    if line.startswith(marker):
                        break
                else:
                    proc.wait()
                    return Attempt(None, time.perf_counter() - started, None, False)
            else:
                while proc.poll() is None and not self.run_folders(job) - before:
                    time.sleep(0.01)
                if proc.poll() is not None:
                    return Attempt(None, time.perf_counter() - started, None, False)
            opened, opened_clock = time.perf_counter() - started, time.time()
            proc.wait(timeout=delay)
            return Attempt(None, time.perf_counter() - started, opened, False, opened_clock)
        except subprocess.TimeoutExpired:
            in_window = bool(self.run_folders(job) - before)
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = time.perf_counter() - started
            proc.wait()
            return Attempt(killed_at, time.perf_counter() - started, opened, in_window, opened_clock)
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
    return sum(
        1
        for p in folder.iterdir()
        if p.is_dir()
        and p.name != manifest["run"]
        and (p.name.startswith(outputs.RUN_PREFIX) or p.name.startswith(outputs.BEAM_TEMP_PREFIX))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs to deliver, shared out over the jobs in turn")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and of the generated rides")
    parser.add_argument("--rows", type=int, default=4000, help="generated rides per run")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated jobs to kill, of " + ", ".join(JOBS))
    parser.add_argument(
        "--min_in_window",
        type=int,
        default=20,
        help="go on killing until at least this many kills (or --kills, if fewer) landed in a write/publish window",
    )
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
        print(
            "uninterrupted: "
            + ", ".join(f"{job} {durations[job]:.1f} s" for job in jobs)
            + f"; training rows {expected_rows:,}",
            flush=True,
        )
        state = {
            "preprocess": published_set(crash.processed),
            "predict": published_set(crash.predictions),
            "train": finished_runs(crash.registry),
        }
        tally = {
            job: {"kills": 0, "ended_first": 0, "survived": 0, "broken": 0, "in_window": 0, "new": 0} for job in jobs
        }
        resumes = {"resumed": 0, "rows_ok": 0}
        # How long a job's write window lasts (its run folder there -> it publishes): at first half the
        # run, then what the last run that published measured (the machine is shared).
        windows = {job: 0.5 * durations[job] for job in jobs}
        target = min(args.min_in_window, args.kills)
        print(f"{'#':>3}  {'job':<10} {'kill at':>8}  {'window':>6}  {'outcome':<14} {'litter':>6}  note", flush=True)
        attempt = 0

        def tallied(key: str) -> int:
            return sum(t[key] for t in tally.values())

        while (
            tallied("kills") < args.kills or tallied("in_window") < target
        ) and time.perf_counter() - started < args.time_limit:
            job = jobs[attempt % len(jobs)]
            attempt += 1
            # Every other training kill comes just after a checkpoint, so `--resume` has work to do.
            after_chunk = rng.randint(1, 3) if job == "train" and tally[job]["kills"] % 2 else None
            # Anywhere in the write window, from the run folder's creation to publication, and a little
            # after (the old run's removal, the exit).
            delay = rng.uniform(0.0, 1.0) if after_chunk else rng.uniform(0.0, 1.1 * windows[job])
            tried = crash.run_and_kill(job, delay, after_chunk)
            killed_at = tried.killed_at
            killed = killed_at is not None
            published = crash.published_at(job)
            if not after_chunk and tried.opened_clock is not None and published and published > tried.opened_clock:
                windows[job] = published - tried.opened_clock  # this run published: its window, measured
            tally[job]["kills" if killed else "ended_first"] += 1
            tally[job]["in_window"] += tried.in_window
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
                tally[job]["new"] += outcome.startswith("new")
            elif not ok:
                tally[job]["broken"] += 1
            label = f"{killed_at:.2f} s" if killed else "(ended)"
            if after_chunk and killed:
                note = f"after chunk {after_chunk}; {note}".rstrip("; ")
            window = ("in" if tried.in_window else "before") if killed else "-"
            print(f"{attempt:>3}  {job:<10} {label:>8}  {window:>6}  {outcome:<14} {spare:>6}  {note}", flush=True)
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
    in_window, new = tallied("in_window"), tallied("new")
    print(
        f"{'job':<10} {'kills':>6} {'in window':>10} {'survived':>9} {'new output':>11} {'lost/mixed':>11} "
        f"{'ended before kill':>18}"
    )
    for job, t in tally.items():
        print(
            f"{job:<10} {t['kills']:>6} {t['in_window']:>10} {t['survived']:>9} {t['new']:>11} {t['broken']:>11} "
            f"{t['ended_first']:>18}"
        )
    print(
        f"summary: {kills} kills, {survived} survived, {broken} outputs lost or mixed; "
        f"{in_window} kills in the write/publish window (its new run folder there), {new} after publishing; "
        f"{resumes['resumed']} training runs resumed, {resumes['rows_ok']} with the uninterrupted run's rows; "
        f"litter left after a clean re-run: {sum(leftovers.values())}; seed {args.seed}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    failed = (
        broken
        or resumes["rows_ok"] != resumes["resumed"]
        or any(leftovers.values())
        or kills < args.kills
        or in_window < target
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
