"""Benchmark the BigQuery path against the CSV path on the same rides, on a local BigQuery emulator.

    python scripts/bench_bigquery.py                   # 1.1 M rides (the size of raw_all); make bench_bigquery
    python scripts/bench_bigquery.py --rows 200000 --read_methods EXPORT
    python scripts/bench_bigquery.py --rows 3000 --no-timing   # the equality check alone (tests)

Starts the emulator (scripts/bigquery_emulator.py, its own venv .venv-bqemu), loads N
generated rides (taxifare_core.generate) as wagon-public-datasets.taxifare.raw_all and
writes the same rides as one CSV, then runs each step in its own process, timing it end
to end and sampling the summed RSS of its process tree every 20 ms
(bench_preprocess.measure; the emulator's own process is not counted):

  (a) read-only  Beam's ReadFromBigQuery of the contract's query -> Count.Globally, per read method
  (b) bigquery   `python -m pipelines.preprocess --source bigquery`, per read method
  (c) csv        `python -m pipelines.preprocess --source csv` on the CSV of the same rides

It checks that every (b) writes the same processed lines as (c) (train and val shards,
sorted, compared by SHA-256), prints a markdown table with (b) - (a) against (c), and stops
the emulator by its PID. Exit code 1 when a step fails, the rows differ or the read-only
step's count is not the rows preprocessing read from the same query; 2 on a bad flag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_preprocess  # noqa: E402
from emulators import bigquery as bq_server  # noqa: E402
from emulators import processes as emulator_processes
from pipelines.cli import OneLineErrorParser, positive_int  # noqa: E402
from taxifare_core import contract  # noqa: E402
from taxifare_core.storage import outputs  # noqa: E402

PROG = "bench_bigquery.py"
READ_METHODS = ("DIRECT_READ", "EXPORT")
DATA_SIZE = "all"
TABLE = f"{contract.BQ_DATASET}.raw_{DATA_SIZE}"
# Targets of issue 11 at 1.1 M rides.
TARGET_OVERHEAD_RATIO = 1.5
TARGET_PEAK_BYTES = 1.5 * 2**30


def count_rows(emulator: str, read_method: str, temp_location: str) -> int:
    """(a): Beam's ReadFromBigQuery of the contract's query into Count.Globally; prints the count."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.local.bigquery_emulator import use_bigquery_emulator
    from pipelines.preprocessing.bigquery import build_query, read_from_bigquery
    from pipelines.runners import DEFAULT_RUNNER

    use_bigquery_emulator(emulator)
    query = build_query(DATA_SIZE, contract.DEFAULT_MIN_DATE, contract.DEFAULT_MAX_DATE)
    options = PipelineOptions(["--runner", DEFAULT_RUNNER, "--project", contract.BQ_PROJECT])
    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | "ReadBigQuery" >> read_from_bigquery(query, read_method, contract.BQ_PROJECT, temp_location)
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: print(f"rows read: {n}", flush=True))
        )
    return 0


def lines_digest(folder: Path) -> tuple[int, str]:
    """(line count, SHA-256 of the sorted lines) of folder's published train and val shards."""
    lines = []
    for pattern in ("train-*.csv", "val-*.csv"):
        paths = outputs.resolve(str(folder / pattern))  # the run summary.json publishes
        if paths is None:
            raise SystemExit(f"{PROG}: {folder} holds no published output (no summary.json manifest)")
        for path in paths:
            lines += [line for line in Path(path).read_bytes().split(b"\n") if line]
    lines.sort()
    return len(lines), hashlib.sha256(b"\n".join(lines)).hexdigest()


def rows_read_by_count_step(log_path: Path) -> int | None:
    """The count the read-only step printed ("rows read: N", its last such line), or None."""
    counts = re.findall(r"^rows read: (\d+)$", log_path.read_text(errors="replace"), re.M)
    return int(counts[-1]) if counts else None


def rows_read_by_pipeline(folder: Path) -> int:
    """rows_read of a preprocessing output's summary.json."""
    return json.loads((folder / "summary.json").read_text())["rows_read"]


def step_commands(args, host_port: str, csv_path: Path, workdir: Path) -> dict[str, tuple[list[str], Path | None]]:
    """Each step's label -> (command line, output folder or None)."""
    extra = shlex.split(args.pipeline_args)
    steps = {}
    for method in args.read_methods:
        temp = str(workdir / f"tmp_{method}")
        steps[f"(a) read-only {method}"] = (
            [
                sys.executable,
                __file__,
                "--run_count",
                "--emulator",
                host_port,
                "--read_method",
                method,
                "--temp_location",
                temp,
            ],
            None,
        )
        out = workdir / f"out_bigquery_{method}"
        steps[f"(b) bigquery {method}"] = (
            bq_server.preprocess_command(
                host_port,
                "--read_method",
                method,
                "--data_size",
                DATA_SIZE,
                "--temp_location",
                temp,
                "--output",
                str(out),
                *extra,
            ),
            out,
        )
    out = workdir / "out_csv"
    steps["(c) csv"] = (
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--source",
            "csv",
            "--input",
            str(csv_path),
            "--output",
            str(out),
            *extra,
        ],
        out,
    )
    return steps


def table_markdown(results: dict[str, tuple[float, int, float]], methods: tuple[str, ...], rows: int) -> str:
    """The timings as a markdown table, with (b) - (a) against (c) and the targets."""
    csv_seconds, _, csv_cpu = results["(c) csv"]
    lines = [
        f"{rows:,} rides; times are whole processes (interpreter start-up included)",
        "",
        "| step | time (s) | CPU (s) | peak RSS, process tree (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, (seconds, peak, cpu) in results.items():
        lines.append(f"| {label} | {seconds:.1f} | {cpu:.1f} | {peak / 2**20:,.0f} |")
    lines.append("")
    for method in methods:
        read, full = results[f"(a) read-only {method}"], results[f"(b) bigquery {method}"]
        added = full[0] - read[0]
        ratio = added / csv_seconds
        cpu_ratio = (full[2] - read[2]) / csv_cpu
        lines.append(
            f"- {method}: (b) - (a) = {added:.1f} s = {ratio:.2f}x (c), in CPU {cpu_ratio:.2f}x "
            f"(target <= {TARGET_OVERHEAD_RATIO}x: {'met' if ratio <= TARGET_OVERHEAD_RATIO else 'NOT met'}); "
            f"peak of (b) {full[1] / 2**20:,.0f} MB (target < {TARGET_PEAK_BYTES / 2**20:,.0f} MB: "
            f"{'met' if full[1] < TARGET_PEAK_BYTES else 'NOT met'})"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=positive_int,
        default=1_100_000,
        help="rides to generate and load (default 1,100,000, the size of raw_all)",
    )
    parser.add_argument(
        "--read_methods",
        default=",".join(READ_METHODS),
        help="comma-separated BigQuery read methods to run (default: DIRECT_READ,EXPORT)",
    )
    parser.add_argument(
        "--pipeline_args", default="", help="extra flags for both preprocess runs (b) and (c), e.g. '--dedupe global'"
    )
    parser.add_argument(
        "--workdir", default=None, help="folder for the emulator, the CSV and the outputs (default: a new temp dir)"
    )
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument(
        "--no-timing", dest="timing", action="store_false", help="print only the equality checks, not the timing table"
    )
    parser.add_argument("--run_count", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--read_method", choices=READ_METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--temp_location", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.read_methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in READ_METHODS]
    if unknown or not methods:
        parser.error(f"--read_methods takes {' and/or '.join(READ_METHODS)}, got {args.read_methods!r}")
    args.read_methods = methods
    return args


def main(argv=None) -> int:
    """Start the emulator, load, run every step, compare, print; the emulator is stopped in any case."""
    args = parse_args(argv)
    if args.run_count:
        return count_rows(args.emulator, args.read_method, args.temp_location)
    from taxifare_core.generate import generate_rides
    from taxifare_core.ride_shards import write_ride_shards

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_bigquery_"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"generating {args.rows:,} rides in {workdir} ...")
    [csv_path] = write_ride_shards(workdir / "raw", args.rows, args.seed, 1, overwrite=True)
    try:
        server = bq_server.start(workdir / "emulator", log=log)
    except emulator_processes.EmulatorError as error:
        print(f"{PROG}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        log(f"emulator on {server.host_port} (pid {server.pid}); loading {args.rows:,} rides into {TABLE} ...")
        bq_server.load_rides(server.host_port, generate_rides(args.rows, seed=args.seed), TABLE)
        results, digests, read_counts = {}, {}, {}
        for label, (command, output) in step_commands(args, server.host_port, csv_path, workdir).items():
            log(f"running {label} ...")
            log_path = workdir / (label.split(" ", 1)[1].replace(" ", "_") + ".log")
            seconds, peak, cpu, code = bench_preprocess.measure(command, log_path)
            if code != 0:
                print(f"{PROG}: {label} failed (exit {code}), see {log_path}", file=sys.stderr)
                return 1
            results[label] = (seconds, peak, cpu)
            if output is not None:
                digests[label] = lines_digest(output)
            else:
                read_counts[label] = rows_read_by_count_step(log_path)
    finally:
        emulator_processes.stop(server.pid)
    same = True
    reference = digests["(c) csv"]
    for method in args.read_methods:
        digest = digests[f"(b) bigquery {method}"]
        same &= digest == reference and reference[0] > 0  # no rows written compares equal but proves nothing
        print(
            f"same processed rows, bigquery {method} vs csv: {'yes' if digest == reference else 'NO'} "
            f"({digest[0]:,} vs {reference[0]:,} lines)"
        )
        # The read-only step must have read what preprocessing read from the same query: not none, not fewer.
        counted = read_counts[f"(a) read-only {method}"]
        expected = rows_read_by_pipeline(workdir / f"out_bigquery_{method}")
        same &= counted == expected > 0
        print(
            f"rows read, read-only {method} vs bigquery {method}: {'yes' if counted == expected > 0 else 'NO'} "
            f"({'no count printed' if counted is None else f'{counted:,}'} vs {expected:,})"
        )
    if args.timing:
        print()
        print(table_markdown(results, args.read_methods, args.rows))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
