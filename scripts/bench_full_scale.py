"""The whole Kaggle-sized dataset on one computer, end to end: generate, preprocess, train, batch-predict.

    .venv/bin/python scripts/bench_full_scale.py --rows 55000000              # the full size (hours)
    .venv/bin/python scripts/bench_full_scale.py --rows 2000000               # a quick run (minutes)
    .venv/bin/python scripts/bench_full_scale.py --rows 2000000 --skip fit --formats parquet --work /tmp/fs

Steps, each one command in its own process tree (its progress lines pass through):
  generate   - the raw rides with the contract's generator (scripts/generate_rides.py), and the
               held-back rides for prediction (another seed); kept in WORK and reused by the next run
               of the same rows and seed;
  preprocess - `python -m pipelines.preprocess` over them, once per --formats (csv, parquet);
  read       - the trainer's reader alone over each format's train shards (no model: the format's share);
  train      - one pass of `python -m pipelines.train` over each format's shards (one epoch per chunk);
  fit        - the reference: an in-memory `model.fit` epoch on --fit_rows rows (scripts/bench_train.py's
               in-memory case, same batch size), for the trainer's rate ratio;
  predict    - `python -m pipelines.predict --input HELD_BACK --output ...` on --predict_rows rides.
One table: step, rows, wall time, rows/s, peak memory (the summed RSS of the step's process tree,
sampled every 0.2 s with psutil) and disk (bytes the step left in WORK; for preprocessing also the
peak of its Beam temp files). Then raw, processed (each format) and temp bytes, the trainer's
rate against the in-memory fit, and a check that no step left temp files, locks or unpublished
run folders behind. `--skip STEP` (repeatable) leaves a step out; a skipped preprocess or generate
reuses what WORK holds. WORK defaults to a fresh temp folder removed at the end (--work keeps it).
Memory over time: each step's RSS at 25, 50 and 75% of its wall time (flat memory: the same
three figures), and with --plot PATH a PNG of every step's RSS against its seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_train  # noqa: E402  (scripts/ on the path: its shard maker and in-memory case)
from scripts.jobs import TreePeak  # noqa: E402
from taxifare_core import contract  # noqa: E402

STEPS = ("generate", "preprocess", "read", "train", "fit", "predict")

# The "read" step: the trainer's reader alone over the shards (no model), to show what the format changes.
READ_ONLY = (
    "import sys; from taxifare_core.training import reader; "
    "print(sum(len(fares) for _, fares in reader.iter_chunks(sys.argv[1], int(sys.argv[2]), prefetch=0)))"
)
FULL_ROWS = 55_000_000
FULL_PREDICT_ROWS = 1_000_000
FULL_FIT_ROWS = 4_000_000
ROWS_PER_RAW_SHARD = 5_000_000
SAMPLE_SECONDS = 0.2
MEMORY_POINTS = 400  # samples of each step's memory kept for the JSON and the plot
MEMORY_FRACTIONS = (0.25, 0.5, 0.75)


def folder_bytes(folder: Path, name_part: str | None = None) -> int:
    """Bytes of the files under `folder` (only under sub-folders whose name holds `name_part`, if given)."""
    total = 0
    for directory, _, files in os.walk(folder):
        if name_part and name_part not in directory:
            continue
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # removed while walked (a temp file)
                pass
    return total


def shard_bytes(output: Path) -> int:
    """Bytes of the train and val shards of a preprocessing output's run folders."""
    return sum(path.stat().st_size for prefix in ("train", "val") for path in output.glob(f"run-*/{prefix}-*"))


def measure(command: list[str], temp_folder: Path | None = None, log: Path | None = None) -> dict:
    """Run a command; its wall seconds, peak summed RSS of its process tree, peak Beam temp bytes, exit code."""
    import psutil

    peak_temp = 0

    def sample_temp():
        nonlocal peak_temp
        if temp_folder is not None and temp_folder.exists():
            peak_temp = max(peak_temp, folder_bytes(temp_folder, "beam-temp"))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        # stdout (tables, JSON) to the log; stderr (progress lines) passes through to the terminal.
        process = psutil.Popen(command, stdout=sink if log else None, env=env)
        with TreePeak(process, SAMPLE_SECONDS, also=sample_temp) as peak:
            code = process.wait()
            seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_rss": peak.rss,
        "memory": thin(peak.samples, MEMORY_POINTS),
        "peak_temp": peak_temp,
        "code": code,
    }


def thin(samples: list[tuple[float, int]], points: int) -> list[tuple[float, int]]:
    """At most `points` of the (seconds, bytes) samples, evenly spaced, the peak kept (for the JSON and the plot)."""
    if len(samples) <= points:
        return list(samples)
    step = len(samples) / points
    kept = {int(k * step) for k in range(points)} | {max(range(len(samples)), key=lambda k: samples[k][1])}
    return [samples[k] for k in sorted(kept)]


def memory_at(row: dict, fractions=MEMORY_FRACTIONS) -> list[int]:
    """The tree's RSS at each fraction of the step's wall time (the sample nearest it)."""
    samples = row.get("memory") or [(0.0, 0)]
    return [min(samples, key=lambda sample: abs(sample[0] - fraction * row["seconds"]))[1] for fraction in fractions]


def memory_lines(table: list[dict]) -> list[str]:
    """One line per step: RSS at 25/50/75% of it and the growth from 25% to 75% (flat memory: about 0)."""
    lines = []
    for row in table:
        quarter, half, three_quarters = memory_at(row)
        if not quarter:
            continue
        growth = three_quarters / quarter - 1
        lines.append(
            f"{row['step']}: {quarter / 2**20:,.0f} / {half / 2**20:,.0f} / {three_quarters / 2**20:,.0f} MB "
            f"({growth:+.1%})"
        )
    return lines


def plot_memory(table: list[dict], path: Path, title: str) -> None:
    """A PNG of each step's process-tree RSS over its wall time."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.8), layout="constrained")
    axes = figure.subplots()
    for row in table:
        if row.get("memory"):
            seconds, rss = zip(*row["memory"])
            axes.plot(seconds, [value / 2**30 for value in rss], label=f"{row['step']} ({row['seconds']:,.0f} s)")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlabel("seconds into the step (log scale past 10 s)")
    axes.set_ylabel("RSS of the process tree (GB)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left")
    figure.savefig(path, dpi=110)


def run_step(name: str, command: list[str], work: Path, temp_folder: Path | None = None, log: Path | None = None):
    """measure() one step, stop the benchmark in one line if it fails."""
    print(f"--- {name}: {' '.join(command)}", flush=True)
    result = measure(command, temp_folder, log)
    if result["code"] != 0:
        tail = log.read_text()[-2000:] if log and log.exists() else ""
        raise SystemExit(f"{tail}\nbench_full_scale: step {name} failed with exit code {result['code']}")
    return result


def generate(folder: Path, rows: int, seed: int, work: Path) -> dict | None:
    """The raw rides in `folder` (one shard per 5 M rows), or None when a finished earlier run left them."""
    marker = folder / "_GENERATED.json"
    if marker.exists() and json.loads(marker.read_text()) == {"rows": rows, "seed": seed}:
        print(f"--- generate: reusing {folder}", flush=True)
        return None
    shards = max(1, -(-rows // ROWS_PER_RAW_SHARD))
    command = [sys.executable, str(ROOT / "scripts" / "generate_rides.py"), "--rows", str(rows), "--seed", str(seed)]
    command += ["--num_shards", str(shards), "--output", str(folder), "--overwrite"]
    result = run_step("generate", command, work)
    marker.write_text(json.dumps({"rows": rows, "seed": seed}))
    return result


def published_rows(output: Path) -> dict:
    """The published summary of a preprocessing output folder."""
    return json.loads((output / "summary.json").read_text())


def train_metrics(registry: Path) -> dict:
    """metrics.json of the one run in a fresh registry folder."""
    [path] = registry.glob("*/metrics.json")
    return json.loads(path.read_text())


def leftovers(work: Path) -> list[str]:
    """Files a finished run must not leave: Beam temp folders, output locks, unpublished run folders."""
    found = []
    for directory, folders, files in os.walk(work):
        here = Path(directory)
        found += [str(here / name) for name in folders if name.startswith("beam-temp-")]
        found += [str(here / name) for name in files if name == "_LOCK.json" or name.endswith(".tmp")]
        summary = here / "summary.json"
        if summary.exists() and any(name.startswith("run-") for name in folders):
            try:
                published = {rel.split("/", 1)[0] for rel in json.loads(summary.read_text())["output"]["files"]}
            except (ValueError, KeyError, TypeError):
                continue
            found += [str(here / name) for name in folders if name.startswith("run-") and name not in published]
    return found


def human_bytes(size: float) -> str:
    """Bytes in MB or GB."""
    return f"{size / 1e9:,.2f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def print_table(rows: list[dict]) -> None:
    """The one table: step, rows, wall time, rows/s, peak memory, disk."""
    print("\n| step | rows | wall time (s) | rows/s | peak memory, process tree (MB) | disk |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        rate = f"{row['rows'] / row['seconds']:,.0f}" if row["rows"] and row["seconds"] else "-"
        print(
            f"| {row['step']} | {row['rows']:,} | {row['seconds']:,.1f} | {rate} | "
            f"{row['peak_rss'] / 2**20:,.0f} | {row.get('disk', '-')} |"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags; sizes not given scale with --rows from the full run's (55 M rows: 1 M predicted, 4 M fitted)."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="raw rides generated and preprocessed")
    parser.add_argument("--seed", type=int, default=55, help="the generator's seed (held-back rides: seed + 1)")
    parser.add_argument("--predict_rows", type=int, default=None, help="held-back rides (default: rows x 1/55)")
    parser.add_argument("--fit_rows", type=int, default=None, help="in-memory fit rows (default: min(4 M, rows))")
    parser.add_argument("--formats", default="csv,parquet", help="shard formats to preprocess and train from")
    parser.add_argument("--skip", action="append", default=[], choices=STEPS, help="leave a step out (repeatable)")
    parser.add_argument("--chunk_size", type=int, default=100_000, help="the trainer's chunk size")
    parser.add_argument("--batch_size", type=int, default=contract.BATCH_SIZE, help="batch size of both fits")
    parser.add_argument("--work", type=Path, default=None, help="keep everything in this folder (reused)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="also draw each step's memory over time (PNG)")
    args = parser.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not args.formats or set(args.formats) - {"csv", "parquet"}:
        parser.error(f"--formats takes csv and/or parquet, got {','.join(args.formats)}")
    if args.rows < 1000:
        parser.error(f"--rows must be at least 1000, got {args.rows}")
    if args.predict_rows is None:
        args.predict_rows = max(1_000, min(FULL_PREDICT_ROWS, args.rows * FULL_PREDICT_ROWS // FULL_ROWS))
    if args.fit_rows is None:
        args.fit_rows = min(FULL_FIT_ROWS, args.rows)
    return args


def run(args: argparse.Namespace, work: Path) -> dict:
    """Every step not skipped, in order; the table's rows and the disk figures."""
    table, disk = [], {}
    raw, held_back = (
        work / f"raw-{args.rows}-seed{args.seed}",
        work / f"held-back-{args.predict_rows}-seed{args.seed + 1}",
    )
    if "generate" not in args.skip:
        for folder, rows, seed in ((raw, args.rows, args.seed), (held_back, args.predict_rows, args.seed + 1)):
            result = generate(folder, rows, seed, work)
            if result:
                table.append(
                    {
                        "step": f"generate {folder.name}",
                        "rows": rows,
                        **result,
                        "disk": human_bytes(folder_bytes(folder)),
                    }
                )
    disk["raw"] = folder_bytes(raw) + folder_bytes(held_back)

    for shard_format in args.formats:
        processed = work / f"processed-{shard_format}"
        if "preprocess" not in args.skip:
            command = [sys.executable, "-m", "pipelines.preprocess", "--input", str(raw / "rides-*.csv")]
            command += ["--output", str(processed), "--shard_format", shard_format]
            result = run_step(f"preprocess {shard_format}", command, work, processed, work / "preprocess.log")
            summary = published_rows(processed)
            disk[f"temp_peak_{shard_format}"] = result["peak_temp"]
            table.append(
                {
                    "step": f"preprocess ({shard_format} shards)",
                    "rows": summary["rows_read"],
                    **result,
                    "disk": f"{human_bytes(folder_bytes(processed))} (temp peak {human_bytes(result['peak_temp'])})",
                }
            )
        if processed.exists():
            disk[f"processed_{shard_format}"] = folder_bytes(processed)
            disk[f"shards_{shard_format}"] = shard_bytes(processed)

        if "read" not in args.skip:
            command = [sys.executable, "-c", READ_ONLY, str(processed / "train-*.csv"), str(args.chunk_size)]
            log = work / f"read-{shard_format}.log"
            result = run_step(f"read {shard_format}", command, work, log=log)
            rows = int(log.read_text().split()[-1])
            table.append({"step": f"read the train shards only ({shard_format})", "rows": rows, **result})

        if "train" not in args.skip:
            registry = work / f"registry-{shard_format}"
            shutil.rmtree(registry, ignore_errors=True)
            command = [sys.executable, "-m", "pipelines.train", "--train", str(processed / "train-*.csv")]
            command += ["--val", str(processed / "val-*.csv"), "--registry", str(registry)]
            command += ["--chunk_size", str(args.chunk_size), "--batch_size", str(args.batch_size)]
            command += ["--max_epochs_per_chunk", "1", "--seed", "1"]
            result = run_step(f"train {shard_format}", command, work, log=work / f"train-{shard_format}.log")
            metrics = train_metrics(registry)
            table.append(
                {
                    "step": f"train, one pass ({shard_format} shards)",
                    "rows": metrics["rows"],
                    **result,
                    "loop_seconds": metrics["train_seconds"],
                    "disk": human_bytes(folder_bytes(registry)),
                }
            )

    if "fit" not in args.skip:
        table.append(fit_reference(args, work))

    if "predict" not in args.skip:
        registry = next((work / f"registry-{f}" for f in args.formats if (work / f"registry-{f}").exists()), None)
        if registry is None:
            raise SystemExit("bench_full_scale: predict needs a trained model: do not skip train")
        predictions = work / "predictions"
        command = [sys.executable, "-m", "pipelines.predict", "--input", str(held_back / "rides-*.csv")]
        # The run just trained, blessed or not (a small run's model may not beat the baseline).
        command += ["--output", str(predictions), "--registry", str(registry), "--run", train_metrics(registry)["run"]]
        result = run_step("predict", command, work, predictions, work / "predict.log")
        priced = json.loads((predictions / "summary.json").read_text())
        rows = priced["predicted"] + priced["dead_letter"]
        table.append({"step": "batch predict", "rows": rows, **result, "disk": human_bytes(folder_bytes(predictions))})
    return {"table": table, "disk": disk}


def fit_reference(args: argparse.Namespace, work: Path) -> dict:
    """scripts/bench_train.py's in-memory case on fit_rows processed rows (its own shards, made as it makes them)."""
    folder = work / f"fit-{args.fit_rows}"
    if not (folder / "val-00000-of-00001.csv").exists():
        shards = max(1, args.fit_rows // 1_000_000)
        bench_train.make_shards(folder, args.fit_rows, shards, val_rows=20_000, scale=1, seed=100)
    command = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--child", "in_memory"]
    command += ["--train_glob", str(folder / "train-*.csv"), "--val_glob", str(folder / "val-*.csv")]
    command += ["--chunk_size", str(args.chunk_size), "--batch_size", str(args.batch_size)]
    log = work / "fit.log"
    result = run_step("fit", command, work, log=log)
    found = json.loads(log.read_text().strip().splitlines()[-1])
    # The fit's rate counts the fit call only (loading the rows first is not counted), as bench_train does.
    return {"step": "in-memory fit (reference)", "rows": found["rows"], **result, "fit_seconds": found["seconds"]}


def report(found: dict, work: Path) -> dict:
    """Print the table, the disk figures, the trainer's ratio and what was left behind."""
    table, disk = found["table"], found["disk"]
    print_table(table)
    print("\ndisk: " + ", ".join(f"{name} {human_bytes(size)}" for name, size in disk.items()))
    if "shards_csv" in disk and "shards_parquet" in disk and disk["shards_csv"]:
        print(f"Parquet / CSV bytes of the processed output: {disk['shards_parquet'] / disk['shards_csv']:.2f}")
    fit = next((row for row in table if row["step"].startswith("in-memory fit")), None)
    for row in table:
        if "loop_seconds" in row:
            loop_rate = row["rows"] / row["loop_seconds"]
            line = f"{row['step']}: the trainer's chunk loop {loop_rate:,.0f} rows/s"
            if fit:
                fit_rate = fit["rows"] / fit["fit_seconds"]
                row["ratio_to_fit"] = loop_rate / fit_rate
                line += f" = {row['ratio_to_fit']:.2f}x the in-memory fit's {fit_rate:,.0f} rows/s"
            print(line)
    loops = {row["step"]: row["rows"] / row["loop_seconds"] for row in table if "loop_seconds" in row}
    csv_loop, parquet_loop = loops.get("train, one pass (csv shards)"), loops.get("train, one pass (parquet shards)")
    if csv_loop and parquet_loop:
        print(f"the trainer's chunk loop from Parquet / from CSV: {parquet_loop / csv_loop:.2f}x")
    print("\nmemory at 25 / 50 / 75% of each step's wall time (growth from 25% to 75%):")
    for line in memory_lines(table):
        print(f"  {line}")
    left = leftovers(work)
    print("left behind: " + (", ".join(left) if left else "nothing (no Beam temp files, locks or unpublished runs)"))
    return {"table": table, "disk": disk, "left_behind": left}


def main(argv: list[str] | None = None) -> int:
    """Run the steps in WORK (a temp folder unless --work), print and optionally save the results."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_full_scale-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("LOCAL_DATA_PATH", str(work / "local_data"))
        os.environ.setdefault("LOCAL_REGISTRY_PATH", str(work / "local_registry"))
        results = report(run(args, work), work)
        if args.plot:
            plot_memory(results["table"], args.plot, f"bench_full_scale.py --rows {args.rows:,}: memory over time")
            print(f"memory over time: {args.plot}")
    results["args"] = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 1 if results["left_behind"] else 0


if __name__ == "__main__":
    sys.exit(main())
