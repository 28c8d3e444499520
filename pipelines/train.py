"""The streaming trainer: processed shards -> the contract's Keras model, chunk by chunk -> registry.

    python -m pipelines.train                               # or: make train
    python -m pipelines.train --train 'gs://b/processed/train-*.csv' --val 'gs://b/processed/val-*.csv'
    python -m pipelines.train --resume                      # continue the last interrupted run

The model is built once and keeps learning from chunk to chunk (incremental
learning, as the origin course's `train()`): each chunk of `--chunk_size` rows
is fitted for up to `--max_epochs_per_chunk` epochs, early-stopping on the
validation loss and keeping the best epoch's weights. Memory depends on the
chunk size and the bounded validation sample, never on the dataset. Beside the
network, a linear regression of fare on manhattan distance is fitted on the
same stream (closed form, running sums) and scored on the same validation rows.
After each chunk the model and a JSON state are checkpointed in the run folder,
so `--resume` continues from the last completed chunk; the state records the
input shards' sizes and versions, and `--resume` refuses shards that changed.

At the end the new model, the baseline and the production model are scored on
the same validation rows: the run is blessed when its val MAE beats the
baseline's by `--bless_min_gain` and is no worse than the production model's
(within `--bless_max_regression`); a blessed run is promoted to production (served
by default by `serve`, `predict` and batch prediction). The last lines say
blessed or not and why; metrics.json records it. See docs/training.md
("Model lifecycle").

Exit codes: 0 finished and saved (blessed or not); 4 not blessed with
`--fail_if_not_blessed` (for schedulers); 2 bad flag, path, registry or input data
(non-finite values, changed shards, unreadable checkpoint), one line; 1 the run
itself failed (the loss became NaN, out of memory), one line, nothing registered.
See docs/training-safety.md.

From Python: `metrics = run(parse_args([...]))`.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cli import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    UsageError,
    entry_point,
    non_negative_int,
    number_in,
    on_interrupt,
    positive_float,
    positive_int,
    report_usage_error,
    writes_to,
)
from pipelines.trainer.blessing import DEFAULT_MAX_REGRESSION, DEFAULT_MIN_GAIN
from pipelines.trainer.loop import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LOSS,
    DEFAULT_MAX_EPOCHS_PER_CHUNK,
    DEFAULT_MAX_VAL_ROWS,
    DEFAULT_PATIENCE,
    EXIT_RUN_FAILED,
    TRAIN_PREFIX,
    VAL_PREFIX,
    RunFailed,
    run,
)
from taxifare_core import contract, storage
from taxifare_core.training import reader, registry
from taxifare_core.training.model import LOSSES

PROG = "python -m pipelines.train"
EXIT_NOT_BLESSED = 4


def default_processed_dir() -> str:
    """The folder `python -m pipelines.preprocess` writes when run without flags (asked of its own config)."""
    from pipelines.preprocessing.options import parse_args as preprocess_args
    from pipelines.preprocessing.options import resolve_config
    from taxifare_core.default_sample import default_sample_dir
    from taxifare_core.ride_shards import DEFAULT_PREFIX

    # The embedded sample's glob, named without generating it: only the folder name is wanted.
    config = resolve_config(
        *preprocess_args([]), default_input=lambda: str(default_sample_dir() / f"{DEFAULT_PREFIX}-*.csv")
    )
    return config.output


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Train the taxifare model on processed shards, chunk by chunk, into the model registry.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--train",
        default=None,
        help="glob of the processed train shards, local or gs:// "
        "(default: train-*.csv in the folder `make preprocess` writes by default)",
    )
    parser.add_argument(
        "--val",
        default=None,
        help="glob of the processed validation shards, local or gs:// (default: val-*.csv beside it)",
    )
    parser.add_argument(
        "--chunk_size",
        type=positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help="rows per training chunk: memory grows with it, not with the data",
    )
    parser.add_argument("--batch_size", type=positive_int, default=contract.BATCH_SIZE, help="rows per gradient step")
    parser.add_argument(
        "--learning_rate",
        type=positive_float,
        default=DEFAULT_LEARNING_RATE,
        help=f"Adam's learning rate (the contract's: {contract.LEARNING_RATE})",
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default=DEFAULT_LOSS,
        help="training loss, the metric is always MAE (the contract's: mse)",
    )
    parser.add_argument(
        "--patience",
        type=non_negative_int,
        default=DEFAULT_PATIENCE,
        help=f"epochs without a better validation loss before a chunk stops (the contract's: {contract.PATIENCE})",
    )
    parser.add_argument(
        "--max_epochs_per_chunk",
        type=positive_int,
        default=DEFAULT_MAX_EPOCHS_PER_CHUNK,
        help="epoch cap per chunk (early stopping usually ends sooner)",
    )
    parser.add_argument(
        "--max_val_rows",
        type=positive_int,
        default=DEFAULT_MAX_VAL_ROWS,
        help="validation uses the first this-many rows of the val shards (bounded memory)",
    )
    parser.add_argument(
        "--registry", default=str(contract.local_registry_path()), help="model registry folder (local or gs://)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed for weights and shuffling (default: unseeded)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN",
        help="continue an interrupted run from its last completed chunk "
        "(the latest one, or the named run folder); it keeps its own settings",
    )
    parser.add_argument(
        "--bless_min_gain",
        type=_fraction,
        default=DEFAULT_MIN_GAIN,
        help="blessing: the model's val MAE must be at least this fraction below the baseline's (0.01 = 1%%)",
    )
    parser.add_argument(
        "--bless_max_regression",
        type=_fraction,
        default=DEFAULT_MAX_REGRESSION,
        help="blessing: the model's val MAE may be at most this fraction above the production "
        "model's on the same rows (0 = no worse)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no per-chunk progress line (default: one per chunk with rows seen, MAE, rows/s and the pass's ETA)",
    )
    parser.add_argument(
        "--fail_if_not_blessed",
        action="store_true",
        help=f"exit {EXIT_NOT_BLESSED} when the run is not blessed (for schedulers; the run is saved either way)",
    )
    return parser


_fraction = number_in(float, 0, 1, "a fraction from 0 to 1", "fraction")  # argparse type


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse CLI arguments (argv None: sys.argv); absent globs point at the preprocessing default output."""
    args = build_parser().parse_args(argv)
    if args.train is None or args.val is None:
        folder = default_processed_dir()
        args.train = args.train or storage.join(folder, f"{TRAIN_PREFIX}-*.csv")
        args.val = args.val or storage.join(folder, f"{VAL_PREFIX}-*.csv")
    return args


def resume_hint(registry_dir: str, before: set[str], resuming: bool) -> str:
    """What an interrupted run can do next: `--resume NAME` only when a checkpoint is there to resume."""
    unfinished = registry.unfinished_runs(registry_dir)
    started = [name for name in unfinished if name not in before]
    if started:
        return f"continue with --resume {started[-1]}"
    if resuming and unfinished:
        return "continue with --resume"
    return "nothing was checkpointed yet (no chunk finished): start the run again"


def _unfinished(registry_dir: str) -> set[str]:
    """The registry's interrupted runs now (none when it cannot be listed: the run will say why)."""
    try:
        return set(registry.unfinished_runs(registry_dir))
    except (OSError, ValueError, registry.NoModelError):
        return set()


@entry_point(PROG)
def main(argv: list[str] | None = None) -> int:
    """CLI entry point: train, print the summary; one-line errors, exit code 2 (input) or 1 (the run failed);
    Ctrl-C 130 and SIGTERM 143 (pipelines.cli), saying whether `--resume` has something to continue."""
    args = parse_args(argv)
    before = _unfinished(args.registry)
    writes_to(args.registry)
    on_interrupt(lambda: resume_hint(args.registry, before, bool(args.resume)))
    try:
        storage.check_writable(registry.check_root(args.registry))  # a read-only registry: before any work
        metrics = run(args)
    except (UsageError, reader.ShardError, storage.StorageError, registry.NoModelError, registry.RunBusyError) as error:
        return report_usage_error(PROG, error)
    except RunFailed as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except MemoryError:
        print(
            f"{PROG}: error: out of memory: lower --chunk_size or --max_val_rows "
            "(memory grows with them, not with the data)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    if args.fail_if_not_blessed and not metrics["blessed"]:
        return EXIT_NOT_BLESSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
