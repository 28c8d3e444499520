"""Benchmark the preprocessing: the Beam pipeline vs the origin course's chunked pandas vs a plain vectorized script.

    python scripts/bench_preprocess.py                       # 1.1 M rows (the size of raw_all), all three
    python scripts/bench_preprocess.py --rows 5500000 --only pipeline
    python scripts/bench_preprocess.py --rows 2000 --no-timing   # the equality check alone (tests)
    python scripts/bench_preprocess.py --only pipeline --statistics_pairs 5
                        # the statistics' cost: the pipeline with and without them, alternated 5 times

Generates N raw rows (taxifare_core.generate, one CSV with a header), then runs each
approach in its own process, timing it end to end and sampling the summed RSS of its
whole process tree (Beam's worker processes included) every 20 ms:

  pipeline    `python -m pipelines.preprocess` (flags in --pipeline_args)
  reference   the origin course: pd.read_csv(chunksize=100_000), clean, features with
              df.apply(lambda r: pygeohash.encode(...), axis=1), to_csv(mode="a")
  vectorized  one process, no Beam: pyarrow read, taxifare_core numpy features, the
              core's CSV text (taxifare_core.features.format_csv), by 100k-row slices

and checks that all produce the same processed rows (as float32, sorted, within the
contract's 1e-3). Prints a markdown table; exit code 1 if the rows differ.

The pipeline's default run includes the feature statistics, stats.json and report.html;
--statistics_pairs N also runs it N times with and N times without them (--no_statistics),
alternated so a machine slowing down hits both, and prints the ratio of each pair and their median.
"""

from __future__ import annotations

import argparse
import glob
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.jobs import TreePeak  # noqa: E402
from taxifare_core import contract  # noqa: E402
from taxifare_core.storage import outputs  # noqa: E402

APPROACHES = ("pipeline", "reference", "vectorized")
# The fastest local configuration measured at 1.1 M rows on the 2-core machine: the default
# in-process engine (2 worker processes cost ~3.5 s to start, more than they save at this size).
DEFAULT_PIPELINE_ARGS = ""
CHUNK_SIZE = 100_000
MIN_DATE, MAX_DATE = contract.DEFAULT_MIN_DATE, contract.DEFAULT_MAX_DATE


# --- (b) the origin course's approach -------------------------------------------


def course_clean(df: pd.DataFrame) -> pd.DataFrame:
    """The course's clean_data: duplicates, missing values, then the contract's filters."""
    df = df.drop_duplicates().dropna(how="any", axis=0)
    df = df[
        (df.dropoff_latitude != 0)
        | (df.dropoff_longitude != 0)
        | (df.pickup_latitude != 0)
        | (df.pickup_longitude != 0)
    ]
    df = df[
        (df.passenger_count > contract.PASSENGER_MIN_EXCLUSIVE)
        & (df.passenger_count < contract.PASSENGER_MAX_EXCLUSIVE)
    ]
    df = df[(df.fare_amount > contract.FARE_MIN_EXCLUSIVE) & (df.fare_amount < contract.FARE_MAX_EXCLUSIVE)]
    for column in ("pickup_latitude", "dropoff_latitude"):
        df = df[df[column].between(contract.LATITUDE_MIN, contract.LATITUDE_MAX)]
    for column in ("pickup_longitude", "dropoff_longitude"):
        df = df[df[column].between(contract.LONGITUDE_MIN, contract.LONGITUDE_MAX)]
    return df


def course_features(df: pd.DataFrame) -> np.ndarray:
    """The course's preprocess_features, geohash by df.apply row by row as the notebook does."""
    import pygeohash

    n = len(df)
    out = np.zeros((n, contract.N_FEATURES), dtype=np.float64)
    out[:, contract.COL_PASSENGERS] = (df.passenger_count.to_numpy() - 1) / contract.PASSENGER_SCALE
    local = df.pickup_datetime.dt.tz_convert(contract.LOCAL_TIMEZONE)
    rows = np.arange(n)
    out[rows, contract.COLS_WEEKDAY.start + local.dt.dayofweek.to_numpy()] = 1
    out[rows, contract.COLS_MONTH.start + local.dt.month.to_numpy() - 1] = 1
    days = (df.pickup_datetime - pd.Timestamp(contract.TIME_ORIGIN)) / pd.Timedelta(1, "D")
    out[:, contract.COL_DAYS] = days.to_numpy() / contract.DAYS_SCALE
    hour = local.dt.hour.to_numpy()
    out[:, contract.COL_HOUR_SIN] = np.sin(2 * np.pi * hour / 24)
    out[:, contract.COL_HOUR_COS] = np.cos(2 * np.pi * hour / 24)
    lat1, lon1 = np.radians(df.pickup_latitude.to_numpy()), np.radians(df.pickup_longitude.to_numpy())
    lat2, lon2 = np.radians(df.dropoff_latitude.to_numpy()), np.radians(df.dropoff_longitude.to_numpy())
    dlat, dlon = lat2 - lat1, lon2 - lon1
    a = np.sin(dlat / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
    out[:, contract.COL_HAVERSINE] = 2 * contract.EARTH_RADIUS_KM * np.arcsin(np.sqrt(a)) / contract.DISTANCE_SCALE_KM
    out[:, contract.COL_MANHATTAN] = (
        contract.EARTH_RADIUS_KM * (np.abs(dlat) + np.abs(dlon)) / contract.DISTANCE_SCALE_KM
    )
    district = {d: i for i, d in enumerate(contract.DISTRICTS)}
    for columns, lat, lon in (
        (contract.COLS_PICKUP_DISTRICT, "pickup_latitude", "pickup_longitude"),
        (contract.COLS_DROPOFF_DISTRICT, "dropoff_latitude", "dropoff_longitude"),
    ):
        hashes = df.apply(
            lambda r, lat=lat, lon=lon: pygeohash.encode(r[lat], r[lon], precision=contract.GEOHASH_PRECISION), axis=1
        )
        index = hashes.map(district).to_numpy(dtype=np.float64, na_value=np.nan) if n else np.empty(0)
        known = ~np.isnan(index)
        out[rows[known], columns.start + index[known].astype(int)] = 1
    return out


def run_reference(input_csv: str, output_dir: str) -> None:
    """(b): chunks of 100k rows read, cleaned, featurized and appended to one processed CSV."""
    output = Path(output_dir) / "processed.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    low, high = pd.Timestamp(MIN_DATE, tz="UTC"), pd.Timestamp(MAX_DATE, tz="UTC")
    for chunk in pd.read_csv(input_csv, chunksize=CHUNK_SIZE):
        chunk = chunk[list(contract.RAW_COLUMNS)]
        chunk["pickup_datetime"] = pd.to_datetime(chunk.pickup_datetime, utc=True, format=contract.CSV_TIME_FORMAT)
        chunk = chunk[(chunk.pickup_datetime >= low) & (chunk.pickup_datetime <= high)]  # the query's BETWEEN
        chunk = course_clean(chunk)
        processed = np.hstack([course_features(chunk), chunk[["fare_amount"]].to_numpy()])
        pd.DataFrame(processed).to_csv(output, mode="a", header=False, index=False)


# --- (c) the plain vectorized script --------------------------------------------


def run_vectorized(input_csv: str, output_dir: str) -> None:
    """(c): one process, no Beam: the whole file read by Arrow, cleaned at once, encoded, written by 100k-row slices."""
    from taxifare_core.cleaning import clean
    from taxifare_core.features import format_csv, processed_rows
    from taxifare_core.parsing import parse_frame

    types = {column: pa.float64() for column in contract.NUMERIC_COLUMNS}
    types[contract.TIME_COLUMN] = pa.timestamp("ns")
    table = pacsv.read_csv(
        input_csv,
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(contract.RAW_COLUMNS), timestamp_parsers=[contract.CSV_TIME_FORMAT]
        ),
    )
    rides, reasons = parse_frame(table.to_pandas())
    rides = rides[reasons.isna().to_numpy()]
    stamps = rides[contract.TIME_COLUMN]
    rides = rides[stamps.isna() | stamps.between(pd.Timestamp(MIN_DATE, tz="UTC"), pd.Timestamp(MAX_DATE, tz="UTC"))]
    kept = clean(rides).kept
    is_val = (kept[contract.TIME_COLUMN] >= pd.Timestamp(val_start(), tz="UTC")).to_numpy()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for name, part in (("train", kept[~is_val]), ("val", kept[is_val])):
        with open(Path(output_dir, f"{name}.csv"), "w") as out:
            # Slices that fit in the CPU caches encode and format faster than one huge array.
            for start in range(0, len(part), CHUNK_SIZE):
                out.write(format_csv(processed_rows(part.iloc[start : start + CHUNK_SIZE])) + "\n")


def val_start() -> str:
    """The pipeline's default validation start for the default dates."""
    from pipelines.preprocessing.bigquery import parse_date
    from pipelines.preprocessing.options import one_month_before

    return one_month_before(parse_date(MAX_DATE)).isoformat()


# --- measuring --------------------------------------------------------------------


def measure(command: list[str], log_path: Path) -> tuple[float, int, float, int]:
    """Run a command; (seconds, peak summed RSS of its process tree in bytes, CPU seconds of the tree, exit code)."""
    import psutil

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = psutil.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        with TreePeak(process, interval=0.02) as peak:
            code = process.wait()
            seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return seconds, peak.rss, cpu, code


def approach_command(name: str, input_csv: str, output_dir: Path, pipeline_args: str) -> list[str]:
    """The command line that runs one approach."""
    if name == "pipeline":
        return [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--input",
            input_csv,
            "--output",
            str(output_dir),
            *shlex.split(pipeline_args),
        ]
    return [sys.executable, __file__, "--run", name, "--input", input_csv, "--output", str(output_dir)]


def output_files(name: str, output_dir: Path) -> list[str]:
    """The processed CSVs one approach wrote."""
    if name == "pipeline":  # the published run's shards, named by OUTPUT/summary.json (taxifare_core.storage.outputs)
        return sorted(
            path
            for pattern in ("train-*.csv", "val-*.csv")
            for path in outputs.resolve(str(output_dir / pattern)) or []
        )
    patterns = {"reference": ["processed.csv"], "vectorized": ["train.csv", "val.csv"]}[name]
    return sorted(path for pattern in patterns for path in glob.glob(str(output_dir / pattern)))


def load_sorted(paths: list[str]) -> np.ndarray:
    """All processed rows of some CSVs as float32, sorted (exact columns first) for comparison."""
    parts = []
    for path in paths:
        if Path(path).stat().st_size == 0:
            continue
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
        parts.append(np.column_stack([c.to_numpy().astype(np.float64) for c in table.columns]).astype(np.float32))
    rows = np.concatenate(parts) if parts else np.empty((0, contract.N_PROCESSED_COLUMNS), np.float32)
    # np.lexsort sorts by its last key first: fare, passengers and one-hots, then the continuous features.
    continuous = [
        contract.COL_DAYS,
        contract.COL_HOUR_SIN,
        contract.COL_HOUR_COS,
        contract.COL_HAVERSINE,
        contract.COL_MANHATTAN,
    ]
    exact = [j for j in range(rows.shape[1]) if j not in continuous]
    keys = [rows[:, j] for j in reversed([contract.N_FEATURES, *exact[:-1], *continuous])]
    return rows[np.lexsort(keys)]


def same_rows(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
    """Whether two sorted row sets match within the contract's tolerance, and how they differ.

    Two empty outputs are refused: no rows written compares equal but proves nothing.
    """
    if a.shape != b.shape:
        return False, f"shapes differ: {a.shape} vs {b.shape}"
    if not len(a):
        return False, "no rows written: nothing to compare"
    worst = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return worst <= contract.PROCESSED_TOLERANCE, f"max |difference| {worst:.2g}"


def table_markdown(results: dict, rows: int) -> str:
    """The results as a markdown table."""
    lines = [
        "| approach | time (s) | rows/s | speed vs reference | time vs vectorized | CPU (s) "
        "| peak RSS, process tree (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (seconds, peak, cpu, _) in results.items():
        ref = results.get("reference", (None,))[0]
        vec = results.get("vectorized", (None,))[0]
        speed = f"{ref / seconds:.1f}x" if ref else "-"
        ratio = f"{seconds / vec:.2f}x" if vec else "-"
        lines.append(
            f"| {name} | {seconds:.1f} | {rows / seconds:,.0f} | {speed} | {ratio} | {cpu:.1f} | {peak / 2**20:,.0f} |"
        )
    return "\n".join(lines)


def statistics_overhead(input_csv: str, workdir: Path, pairs: int, pipeline_args: str) -> str:
    """The pipeline with / without statistics, alternated `pairs` times: a markdown table and the median ratio."""
    lines = [
        "| pair | with statistics (s) | without (s) | ratio | CPU with / without (s) | CPU ratio "
        "| peak RSS with / without (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios, cpu_ratios = [], []
    for pair in range(1, pairs + 1):
        timings = {}
        # Alternate which one goes first, so a warm cache or a busy neighbour favours neither.
        order = ("with", "without") if pair % 2 else ("without", "with")
        for variant in order:
            extra = "" if variant == "with" else " --no_statistics"
            command = approach_command("pipeline", input_csv, workdir / f"out_stats_{variant}", pipeline_args + extra)
            seconds, peak, cpu, code = measure(command, workdir / f"stats_{variant}.log")
            if code != 0:
                raise RuntimeError(f"pipeline {variant} statistics failed (exit {code}), see {workdir}")
            timings[variant] = (seconds, peak, cpu)
        (with_s, with_peak, with_cpu), (without_s, without_peak, without_cpu) = timings["with"], timings["without"]
        ratios.append(with_s / without_s)
        cpu_ratios.append(with_cpu / without_cpu)
        lines.append(
            f"| {pair} | {with_s:.2f} | {without_s:.2f} | {ratios[-1]:.3f}x | {with_cpu:.1f} / "
            f"{without_cpu:.1f} | {cpu_ratios[-1]:.3f}x | {with_peak / 2**20:,.0f} / {without_peak / 2**20:,.0f} |"
        )
    lines.append(
        f"\nmedian ratio with / without statistics over {pairs} pair(s): time {float(np.median(ratios)):.3f}x, "
        f"CPU {float(np.median(cpu_ratios)):.3f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_100_000, help="raw rows to generate (default 1,100,000)")
    parser.add_argument(
        "--only",
        default=",".join(APPROACHES),
        help=f"comma-separated approaches to run, of {', '.join(APPROACHES)} (default: all)",
    )
    parser.add_argument(
        "--pipeline_args",
        default=DEFAULT_PIPELINE_ARGS,
        help=f"extra flags for the pipeline (default: {DEFAULT_PIPELINE_ARGS!r})",
    )
    parser.add_argument("--workdir", default=None, help="folder for the raw and processed files (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument(
        "--no-timing", dest="timing", action="store_false", help="print only the equality check, not the timing table"
    )
    parser.add_argument(
        "--statistics_pairs",
        type=int,
        default=0,
        help="also time the pipeline with and without statistics, alternated, this many pairs (default 0: not)",
    )
    parser.add_argument("--run", choices=("reference", "vectorized"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        (run_reference if args.run == "reference" else run_vectorized)(args.input, args.output)
        return 0
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in APPROACHES]
    if unknown or args.rows < 1:
        print(f"bench_preprocess: error: unknown approach {unknown} or --rows < 1", file=sys.stderr)
        return 2

    from taxifare_core.ride_shards import write_ride_shards

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_preprocess_"))
    raw_dir = workdir / f"raw_{args.rows}_seed{args.seed}"
    if not raw_dir.is_dir():
        print(f"generating {args.rows:,} rows in {raw_dir} ...", file=sys.stderr)
        write_ride_shards(raw_dir, args.rows, args.seed, 1)
    input_csv = sorted(glob.glob(str(raw_dir / "*.csv")))[0]

    results, loaded = {}, {}
    for name in names:
        output_dir = workdir / f"out_{name}"
        for stale in output_files(name, output_dir):
            Path(stale).unlink()
        print(f"running {name} ...", file=sys.stderr)
        seconds, peak, cpu, code = measure(
            approach_command(name, input_csv, output_dir, args.pipeline_args), workdir / f"{name}.log"
        )
        if code != 0:
            print(f"bench_preprocess: {name} failed (exit {code}), see {workdir / f'{name}.log'}", file=sys.stderr)
            return 1
        results[name] = (seconds, peak, cpu, code)
        loaded[name] = load_sorted(output_files(name, output_dir))

    all_same = True
    first = names[0]
    for name in names[1:]:
        same, how = same_rows(loaded[first], loaded[name])
        all_same &= same
        print(f"same processed rows, {first} vs {name}: {'yes' if same else 'NO'} ({len(loaded[name]):,} rows, {how})")
    if args.timing:
        print(f"\n{args.rows:,} raw rows; pipeline flags: {args.pipeline_args or '(none)'}\n")
        print(table_markdown(results, args.rows))
    if args.statistics_pairs > 0:
        print(f"\nstatistics' cost, {args.rows:,} raw rows:\n")
        print(statistics_overhead(input_csv, workdir, args.statistics_pairs, args.pipeline_args))
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
