"""Write seeded, realistic raw NYC taxi rides as sharded CSVs.

See taxifare_core/generate.py, ride_shards.py and default_sample.py.

    python scripts/generate_rides.py                      # the default sample, once
    python scripts/generate_rides.py --rows 10000000 --num_shards 8 --output /tmp/rides

Without --output it fills the embedded default sample folder
($LOCAL_DATA_PATH/raw/generated_{rows}_seed{seed}) if it is absent, atomically.
Bad flags and unwritable outputs end with one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import OneLineErrorParser  # noqa: E402
from taxifare_core import default_sample, generate, ride_shards  # noqa: E402

PROG = Path(__file__).name


def _at_least(minimum: int):
    """argparse type: an integer >= minimum (underscores allowed, e.g. 1_000_000)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Generate realistic raw NYC taxi rides (the raw table's columns plus key, "
        "with the real data's share of dirty rows) as CSV shards with a header each. "
        "Row i depends only on --seed, so any --num_shards gives the same rows.",
    )
    parser.add_argument(
        "--rows",
        type=_at_least(0),
        default=default_sample.DEFAULT_SAMPLE_ROWS,
        help="number of rides to write (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_at_least(0),
        default=generate.DEFAULT_SEED,
        help="random seed; same seed, same rides (default %(default)s)",
    )
    parser.add_argument(
        "--num_shards",
        type=_at_least(1),
        default=1,
        help="number of CSV files, each a contiguous range of rows (default %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for the PREFIX-00000-of-0000K.csv files (default: the "
        "embedded default sample folder, $LOCAL_DATA_PATH/raw/"
        "generated_ROWS_seedSEED, written only if absent)",
    )
    parser.add_argument(
        "--prefix", default=ride_shards.DEFAULT_PREFIX, help="file name prefix, with --output (default %(default)s)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete PREFIX-*.csv files already in --output instead of refusing"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Generate, report progress per block on stderr and one summary line on stdout."""
    args = parse_args(argv)
    start = time.perf_counter()

    def progress(rows: int) -> None:
        # Only worth a line when there is more than one block to wait for.
        if args.rows > generate.BLOCK_ROWS:
            seconds = time.perf_counter() - start
            print(
                f"  {rows:,}/{args.rows:,} rows ({rows / args.rows:.0%}) in {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    target = args.output or default_sample.default_sample_dir(args.rows, args.seed)
    try:
        if args.output is None:
            if target.is_dir():
                print(f"default sample already present: {target} (nothing written)")
                return 0
            glob = default_sample.ensure_default_sample(args.rows, args.seed, args.num_shards, progress)
            files = sorted(Path(glob).parent.glob(Path(glob).name))
        else:
            files = ride_shards.write_ride_shards(args.output, args.rows, args.seed, args.num_shards,
                                                  args.prefix, args.overwrite, progress)  # fmt: skip
    except OSError as err:
        print(f"{PROG}: error: cannot write to {target}: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(
        f"wrote {args.rows:,} rows to {len(files)} file(s) in {target} in {seconds:.2f} s "
        f"({args.rows / max(seconds, 1e-9):,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
