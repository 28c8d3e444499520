"""Benchmark: what bad input costs the preprocessing pipeline (clean rides vs the same rides with bad lines).

    .venv/bin/python scripts/bench_bad_input.py                    # 1.1 M rows, 0.1% of lines bad
    .venv/bin/python scripts/bench_bad_input.py --rows 200000 --bad_every 500

Generates N raw rows once (taxifare_core.generate), writes a dirty copy in which
every `--bad_every`-th line is spoiled in turn as a truncated line (3 fields), a
line with a field too many, or text in a number ("12.5x"), then runs
`python -m pipelines.preprocess` on both, alternated `--repeats` times, each in its
own process. The clean run is the reference measured in the same session. It checks
that the dirty run counts every spoiled line as bad input, and prints the time ratio.
Before the shared Arrow line splitter, any bad line sent its whole 100k-row block
line by line through Python's csv module.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPOILERS = (
    ("truncated line", lambda fields: fields[:3]),
    ("a field too many", lambda fields: [*fields, "extra"]),
    ("text in a number", lambda fields: [fields[0], "12.5x", *fields[2:]]),
)


def spoil(clean_csv: Path, dirty_csv: Path, every: int) -> dict[str, int]:
    """Copy clean_csv with every `every`-th data line spoiled; how many lines of each kind."""
    counts = {name: 0 for name, _ in SPOILERS}
    with open(clean_csv) as source, open(dirty_csv, "w") as target:
        target.write(source.readline())
        for number, line in enumerate(source, start=1):
            if number % every == 0:
                name, spoil_fields = SPOILERS[(number // every) % len(SPOILERS)]
                line = ",".join(spoil_fields(line.rstrip("\n").split(","))) + "\n"
                counts[name] += 1
            target.write(line)
    return counts


def run_pipeline(input_csv: Path, output_dir: Path) -> tuple[float, dict]:
    """Wall seconds of one preprocessing run, and its summary.json."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", "--input", str(input_csv), "--output", str(output_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        raise SystemExit(f"bench_bad_input: preprocessing {input_csv} failed (exit {done.returncode})")
    return seconds, json.loads((output_dir / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """Generate, spoil, run both alternately, print the ratio and the checks."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_100_000, help="raw rows to generate")
    parser.add_argument("--bad_every", type=int, default=1000, help="spoil every this-many-th line")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of clean / dirty")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.bad_every < 2 or args.repeats < 1:
        parser.error("--rows >= 1, --bad_every >= 2 and --repeats >= 1 are needed")

    from taxifare_core.ride_shards import write_ride_shards

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_bad_input_"))
    raw_dir = workdir / f"raw_{args.rows}"
    if not raw_dir.is_dir():
        print(f"generating {args.rows:,} rows in {raw_dir} ...", file=sys.stderr)
        write_ride_shards(raw_dir, args.rows, num_shards=1)
    clean_csv = Path(sorted(glob.glob(str(raw_dir / "*.csv")))[0])
    dirty_csv = workdir / "dirty.csv"
    spoiled = spoil(clean_csv, dirty_csv, args.bad_every)
    seconds = {"clean": [], "dirty": []}
    summaries = {}
    for _ in range(args.repeats):
        for name, path in (("clean", clean_csv), ("dirty", dirty_csv)):
            print(f"running {name} ...", file=sys.stderr)
            took, summaries[name] = run_pipeline(path, workdir / f"out_{name}")
            seconds[name].append(took)
    clean, dirty = statistics.median(seconds["clean"]), statistics.median(seconds["dirty"])
    bad_counted = summaries["dirty"]["bad_input"] - summaries["clean"]["bad_input"]
    print(
        f"\n{args.rows:,} raw rows; {sum(spoiled.values()):,} spoiled in the dirty copy: "
        + ", ".join(f"{count:,} {name}" for name, count in spoiled.items())
    )
    print("\n| input | seconds (median) | runs |\n| --- | ---: | --- |")
    for name, median in (("clean", clean), ("dirty", dirty)):
        print(f"| {name} | {median:.1f} | {', '.join(f'{s:.1f}' for s in seconds[name])} |")
    print(
        f"\ndirty / clean time: {dirty / clean:.2f}x; bad input counted: {bad_counted:,} of "
        f"{sum(spoiled.values()):,} spoiled lines ({'all' if bad_counted == sum(spoiled.values()) else 'MISSING'})"
    )
    return 0 if bad_counted == sum(spoiled.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
