"""Benchmark of the streaming trainer: speed vs in-memory `model.fit`, and memory vs dataset size.

    .venv/bin/python scripts/bench_train.py                       # 1 M and 4 M rows
    .venv/bin/python scripts/bench_train.py --rows 200000 --scale 4 --keep /tmp/bench_train

Each case runs in its own process (so peak memory is its own):
  stream    - `pipelines.train.run` over N rows of shards, one epoch per chunk
              (reading, validation after every chunk, checkpoints, final save);
  in_memory - the same N rows loaded first, then one `model.fit` epoch: same model
              (as `build_model` makes it), batch size and validation rows;
  notebook  - the data scientists' way: N rows in memory, `model.fit` with Keras'
              default of one gradient step per call into TensorFlow (the trainer's
              model runs STEPS_PER_EXECUTION per call: same steps, less dispatch).
At N rows and at scale x N rows (the same shards listed `scale` times through
symlinks: equal content, scale x the rows), stream and in_memory (and, at N,
notebook) alternate `--repeats` times. This machine's speed drifts by +-10% from
minute to minute, so each stream run is compared with the in-memory run right
after it and the median of those pair ratios is the figure; every pair's ratio
and the ratio of the two cases' median rates are printed too. Then the targets:
streaming >= 0.8 x the in-memory rate, and the trainer's peak memory from N to
scale x N rows growing under 20%.

The in-memory rate is rows / seconds of the `fit` call (loading the rows first is
not counted). The streaming rate compares like with like: rows / seconds of the
trainer's chunk loop (`metrics["train_seconds"]`: waiting for each chunk's rows,
fitting it, validating after it; not the ~25 ms checkpoint write per chunk); the
whole run's rate, with its fixed start and finish (validation sample, final
scoring, plot, save), is printed beside it. TensorFlow's import is excluded from
all; its first-call tracing (~2 s) is in all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from taxifare_core import cleaning, contract, features, generate, parsing

TARGET_RATE_RATIO = 0.8
TARGET_MEMORY_GROWTH = 0.20


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_shards(folder: Path, rows: int, shards: int, val_rows: int, scale: int, seed: int) -> None:
    """`shards` train shards of rows/shards processed rows, a val shard, and a `big` folder of symlinks."""
    folder.mkdir(parents=True, exist_ok=True)
    done, per_shard = 0, rows // shards
    print(f"writing {rows:,} processed rows in {shards} shard(s) + {val_rows:,} val rows to {folder}", flush=True)
    for index in range(shards + 1):
        wanted = per_shard if index < shards else val_rows
        raw = generate.generate_rides(int(wanted * 1.08) + 100, seed=seed + index)
        typed, reasons = parsing.parse_frame(raw)
        processed = features.processed_rows(cleaning.clean(typed[reasons.isna()]).kept)[:wanted]
        name = f"train-{index:05d}-of-{shards:05d}.csv" if index < shards else "val-00000-of-00001.csv"
        (folder / name).write_text(features.format_csv(processed) + "\n")
        done += len(processed)
    big = folder / "big"
    big.mkdir(exist_ok=True)
    for copy in range(scale):
        for index in range(shards):
            link = big / f"train-{copy * shards + index:05d}-of-{scale * shards:05d}.csv"
            if not link.exists():
                link.symlink_to(folder / f"train-{index:05d}-of-{shards:05d}.csv")


def child_stream(train_glob: str, val_glob: str, args) -> dict:
    """Case 'stream': the real trainer, one epoch per chunk."""
    from pipelines import train
    from taxifare_core.training.model import keras_module

    keras_module()  # imported before the clocks start, as in the in-memory case
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as registry_dir:
        options = train.parse_args(
            [
                "--train",
                train_glob,
                "--val",
                val_glob,
                "--registry",
                registry_dir,
                "--chunk_size",
                str(args.chunk_size),
                "--batch_size",
                str(args.batch_size),
                "--max_epochs_per_chunk",
                "1",
                "--seed",
                "1",
            ]
        )
        metrics = train.run(options)
    return {
        "rows": metrics["rows"],
        "seconds": metrics["seconds"],
        "chunks": metrics["chunks"],
        "loop_seconds": metrics["train_seconds"],
        "cpu_seconds": time.process_time() - cpu,
    }


def child_in_memory(train_glob: str, val_glob: str, args, steps_per_execution: int | None = None) -> dict:
    """Case 'in_memory': load every row, then one model.fit epoch with the same validation rows.

    `steps_per_execution` None: the trainer's model as built; 1: Keras' default (the notebook).
    """
    from pipelines.trainer.loop import (
        DEFAULT_LEARNING_RATE,
        DEFAULT_LOSS,
        DEFAULT_MAX_VAL_ROWS,
        VALIDATION_BATCH_SIZE,
    )
    from taxifare_core.training import reader
    from taxifare_core.training.model import build_model, keras_module, loss_function

    chunks = list(reader.iter_chunks(train_glob, chunk_size=args.chunk_size, prefetch=0))
    x, y = np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
    del chunks
    validation = reader.read_rows(val_glob, DEFAULT_MAX_VAL_ROWS)
    model = build_model(DEFAULT_LEARNING_RATE, DEFAULT_LOSS, seed=1)
    keras = keras_module()
    if steps_per_execution is not None:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=DEFAULT_LEARNING_RATE),
            loss=loss_function(DEFAULT_LOSS),
            metrics=["mae"],
            steps_per_execution=steps_per_execution,
        )
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=contract.PATIENCE, restore_best_weights=True)
    started, cpu = time.perf_counter(), time.process_time()
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=1,
        validation_data=validation,
        validation_batch_size=VALIDATION_BATCH_SIZE,
        callbacks=[stopper],
        shuffle=True,
        verbose=0,
    )
    return {"rows": len(y), "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}


def run_child(case: str, train_glob: str, val_glob: str, args) -> dict:
    """Run one case in a fresh process; its JSON result plus peak memory."""
    command = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--train_glob",
        train_glob,
        "--val_glob",
        val_glob,
        "--chunk_size",
        str(args.chunk_size),
        "--batch_size",
        str(args.batch_size),
    ]
    print(f"case {case} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"case {case} failed")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_second"] = result["rows"] / result["seconds"]
    if "loop_seconds" in result:
        result["loop_rows_per_second"] = result["rows"] / result["loop_seconds"]
    loop = (
        f"; streaming loop {result['loop_seconds']:.1f} s = {result['loop_rows_per_second']:,.0f} rows/s"
        if "loop_seconds" in result
        else ""
    )
    print(
        f"  {result['rows']:,} rows in {result['seconds']:.1f} s = {result['rows_per_second']:,.0f} rows/s "
        f"({result['cpu_seconds']:.1f} CPU s), peak memory {result['peak_rss_mb']:,.0f} MB{loop}",
        flush=True,
    )
    return result


def _median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return float(np.median(values))


def compare(stream: list[dict], in_memory: list[dict]) -> dict:
    """Median rates of alternated runs at one size, their ratios, and the trainer's peak memory."""
    loop_rates = [r["loop_rows_per_second"] for r in stream]
    run_rates = [r["rows_per_second"] for r in stream]
    fit_rates = [r["rows_per_second"] for r in in_memory]
    pair_loop_ratios = [a / b for a, b in zip(loop_rates, fit_rates)]
    return {
        "rows": stream[0]["rows"],
        "stream_loop_rows_per_second": loop_rates,
        "stream_run_rows_per_second": run_rates,
        "in_memory_rows_per_second": fit_rates,
        # Each stream run is paired with the in-memory run right after it: the pair shares the
        # machine's speed of that minute, so the median of pair ratios is the drift-proof figure.
        "loop_ratio": _median(pair_loop_ratios),
        "run_ratio": _median([a / b for a, b in zip(run_rates, fit_rates)]),
        "ratio_of_median_rates": _median(loop_rates) / _median(fit_rates),
        "pair_loop_ratios": pair_loop_ratios,
        "stream_peak_rss_mb": max(r["peak_rss_mb"] for r in stream),
        "in_memory_peak_rss_mb": max(r["peak_rss_mb"] for r in in_memory),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build shards, run the cases, print and check the targets."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the base case")
    parser.add_argument("--scale", type=int, default=4, help="the big case has scale x rows")
    parser.add_argument("--shards", type=int, default=4, help="train shards of the base case")
    parser.add_argument("--val_rows", type=int, default=20_000, help="validation rows (2%% of 1 M)")
    parser.add_argument("--chunk_size", type=int, default=100_000, help="trainer chunk size")
    parser.add_argument("--batch_size", type=int, default=contract.BATCH_SIZE, help="batch size of both fits")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of stream / in-memory at each size")
    parser.add_argument("--keep", type=Path, default=None, help="reuse / keep the shards in this folder")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", choices=("stream", "in_memory", "notebook"), help=argparse.SUPPRESS)
    parser.add_argument("--train_glob", help=argparse.SUPPRESS)
    parser.add_argument("--val_glob", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "stream":
            result = child_stream(args.train_glob, args.val_glob, args)
        else:
            spe = 1 if args.child == "notebook" else None
            result = child_in_memory(args.train_glob, args.val_glob, args, steps_per_execution=spe)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        if not (folder / "val-00000-of-00001.csv").exists():
            make_shards(folder, args.rows, args.shards, args.val_rows, args.scale, seed=100)
        val_glob = str(folder / "val-*.csv")
        sizes = {"base": str(folder / "train-*.csv"), "big": str(folder / "big" / "train-*.csv")}
        results = {}
        for size, train_glob in sizes.items():
            # The notebook's fit is the third case at the base size only.
            runs = {"stream": [], "in_memory": [], **({"notebook": []} if size == "base" else {})}
            for _ in range(args.repeats):
                for case in runs:
                    runs[case].append(run_child(case, train_glob, val_glob, args))
            results[size] = compare(runs["stream"], runs["in_memory"])
            if "notebook" in runs:
                results["notebook_rows_per_second"] = [r["rows_per_second"] for r in runs["notebook"]]
    verdict = {True: "OK", False: "MISSED"}
    print(
        f"\nmedian over {args.repeats} alternated pairs (each stream run / the in-memory run after it); "
        "every pair in brackets"
    )
    for size in sizes:
        found = results[size]
        pairs = ", ".join(f"{ratio:.2f}" for ratio in found["pair_loop_ratios"])
        print(
            f"{found['rows']:>11,} rows: streaming loop / in-memory fit rate {found['loop_ratio']:.2f} "
            f"[{pairs}] (target >= {TARGET_RATE_RATIO}) {verdict[found['loop_ratio'] >= TARGET_RATE_RATIO]}; "
            f"whole trainer run {found['run_ratio']:.2f}; "
            f"ratio of the median rates {found['ratio_of_median_rates']:.2f}"
        )
    base, big = results["base"], results["big"]
    growth = big["stream_peak_rss_mb"] / base["stream_peak_rss_mb"] - 1
    results["memory_growth"] = growth
    print(
        f"trainer peak memory {base['rows']:,} -> {big['rows']:,} rows: {base['stream_peak_rss_mb']:,.0f} -> "
        f"{big['stream_peak_rss_mb']:,.0f} MB ({growth:+.1%}, target < {TARGET_MEMORY_GROWTH:.0%}) "
        f"{verdict[growth < TARGET_MEMORY_GROWTH]}"
    )
    print(
        f"in-memory fit peak memory: {base['in_memory_peak_rss_mb']:,.0f} MB for {base['rows']:,} rows, "
        f"{big['in_memory_peak_rss_mb']:,.0f} MB for {big['rows']:,}"
    )
    notebook_ratio = _median(base["stream_loop_rows_per_second"]) / _median(results["notebook_rows_per_second"])
    results["vs_notebook"] = notebook_ratio
    print(
        f"the trainer, streaming, vs the notebook's in-memory fit (one step per call, median of {args.repeats}): "
        f"{notebook_ratio:.2f}x the rate"
    )
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
