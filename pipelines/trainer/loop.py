"""The streaming trainer's loop: processed shards -> the contract's Keras model, chunk by chunk -> registry.

The model is built once and keeps learning from chunk to chunk (incremental learning,
as the origin course's `train()`): each chunk is fitted for up to `max_epochs_per_chunk`
epochs, early-stopping on the validation loss and keeping the best epoch's weights.
Memory depends on the chunk size and the bounded validation sample, never on the data.
Beside the network, a linear regression of fare on manhattan distance is fitted on the
same stream and scored on the same validation rows. At the end the new model, the baseline
and the registry's production model are scored on those rows; a blessed run
(pipelines.trainer.blessing) is promoted to production. One trainer per run folder: the
run holds its folder's lock while it trains. The command line is `pipelines.train`:

    metrics = run(pipelines.train.parse_args([...]))
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import numpy as np

from pipelines import progress
from pipelines.cli import (
    UsageError,
)
from pipelines.trainer import blessing
from pipelines.trainer.checkpoint import (
    check_inputs,
    checkpoint_path,
    input_fingerprint,
    load_weights,
    write_checkpoint,
)
from taxifare_core import contract, stats_file, storage
from taxifare_core.training import reader, registry
from taxifare_core.training.baseline import RunningLinearFit, manhattan_km_of
from taxifare_core.training.model import build_model, keras_module, validation_dataset

DEFAULT_CHUNK_SIZE = 100_000


# Measured on the real 8k rides (scripts/quality_real_sample.py, 5 seeds, docs/quality.md):
# with the contract's mse / 0.0005 / patience 2 the network loses to the linear
# baseline (it chases the few very large fares and overfits them); Huber (errors
# over $1 count linearly), a learning rate of 0.001 and patience 5 beat it on
# validation and test for every seed.
DEFAULT_LOSS = "huber"


DEFAULT_LEARNING_RATE = 0.001


DEFAULT_PATIENCE = 5


DEFAULT_MAX_EPOCHS_PER_CHUNK = 100


DEFAULT_MAX_VAL_ROWS = 200_000


# Validation is inference only: big batches cut its per-step overhead (same figures).
VALIDATION_BATCH_SIZE = 8192


TRAIN_PREFIX, VAL_PREFIX = "train", "val"  # the preprocessing pipeline's shard names


# One chunk's rows (65 features + fare, float32) must fit in memory; the reader holds up to 3.
BYTES_PER_ROW = 4 * contract.N_PROCESSED_COLUMNS


EXIT_RUN_FAILED = 1


# Flags that define a run: a resumed run keeps its own values of these.
RUN_SETTINGS = (
    "train", "val", "chunk_size", "batch_size", "learning_rate", "loss",
    "patience", "max_epochs_per_chunk", "max_val_rows", "seed",
)  # fmt: skip


ChunkHook = Callable[[str, int, object], None]


class RunFailed(RuntimeError):
    """The run itself failed (the loss became NaN): nothing is registered; exit code 1."""


def _log(message: str) -> None:
    """One progress line on stdout, flushed."""
    print(message, flush=True)


def _fresh_state(args: argparse.Namespace) -> dict:
    """The JSON state of a run before its first chunk (its input fingerprint is added once resolved)."""
    return {
        "settings": {name: getattr(args, name) for name in RUN_SETTINGS},
        "inputs": None,
        "checkpoint_model": None,
        "best_weights_file": None,
        "best_weights_chunk": None,
        "chunks_done": 0,
        "rows_seen": 0,
        "epochs": 0,
        "seconds": 0.0,
        "wall_seconds": 0.0,
        "best_chunk": None,
        "best_val_loss": None,
        "baseline": RunningLinearFit().state(),
        "history": [],
    }


def _resume_run(args: argparse.Namespace, locks: list) -> tuple[str, dict]:
    """The interrupted run folder (its lock appended to `locks`) and its checkpoint state.

    UsageError when there is none; registry.RunBusyError when another live trainer holds it.
    """
    unfinished = registry.unfinished_runs(args.registry)
    if args.resume == "latest":
        if not unfinished:
            raise UsageError(f"nothing to resume: no interrupted run in {args.registry}")
        name = unfinished[-1]
    elif args.resume in unfinished:
        name = args.resume
    else:
        raise UsageError(
            f"cannot resume {args.resume!r}: interrupted runs in {args.registry}: {', '.join(unfinished) or 'none'}"
        )
    run_dir = storage.join(args.registry, name)
    # Before its state is read: two `--resume` of one run would otherwise both train into it.
    locks.append(registry.lock_run(run_dir))
    if registry.is_finished(run_dir):  # the trainer that held it finished the run meanwhile
        raise UsageError(f"run {name} finished while this trainer waited: nothing to resume")
    try:
        state = registry.read_json(checkpoint_path(run_dir, registry.CHECKPOINT_STATE_FILE))
    except ValueError as error:  # json's errors; the state is written whole, so only by hand or disk damage
        raise UsageError(f"the checkpoint of run {name} is unreadable ({error}): start a new run") from None
    for key in ("inputs", "checkpoint_model", "best_weights_file", "best_weights_chunk"):  # older checkpoints
        state.setdefault(key, None)
    if state["best_weights_chunk"] is not None and state["best_weights_file"] is None:
        state["best_weights_file"] = "best.weights.h5"  # what older checkpoints called it
    if state["inputs"] is None:
        _log(f"run {name}'s checkpoint predates input fingerprints: the shards cannot be checked against it")
    return run_dir, state


def _check_chunk_memory(chunk_size: int) -> None:
    """UsageError when one chunk's row buffer cannot be allocated on this machine."""
    needed = chunk_size * BYTES_PER_ROW
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    fits = total is None or needed <= total
    if fits:
        try:
            np.empty((chunk_size, contract.N_PROCESSED_COLUMNS), dtype=np.float32)
        except (MemoryError, ValueError):
            fits = False
    if not fits:
        memory = f" ({total / 1e9:.1f} GB of memory)" if total else ""
        raise UsageError(
            f"--chunk_size {chunk_size:,} needs {needed / 1e9:,.1f} GB for one chunk's rows "
            f"({contract.N_PROCESSED_COLUMNS} float32 values each), more than this machine can allocate{memory}: "
            f"memory grows with --chunk_size, not with the data; use a smaller one (default {DEFAULT_CHUNK_SIZE:,})"
        )


def _non_finite_loss_stopper():
    """A Keras callback that stops `fit` after an epoch whose loss or val loss is NaN or infinite.

    Checked per epoch (one wasted epoch at most), not per batch: reading the
    loss back every batch would add a device sync to every step.
    `.bad` is then (epoch from 1, "loss" or "val_loss", value).
    """
    keras = keras_module()

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bad = None

        def on_epoch_end(self, epoch, logs=None):
            for name in ("loss", "val_loss"):
                value = (logs or {}).get(name)
                if value is not None and not math.isfinite(float(value)):
                    self.bad = (epoch + 1, name, float(value))
                    self.model.stop_training = True
                    return

    return StopOnNonFiniteLoss()


def _epoch_progress(chunk: int, every: float):
    """A Keras callback printing a line after an epoch when `every` s passed since the chunk's start or its last line.

    A chunk of many epochs (up to --max_epochs_per_chunk) can run for minutes: the
    per-chunk line alone would leave a long silence.
    """
    keras = keras_module()

    class EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if now - self.last >= every:
                self.last = now
                val_mae = (logs or {}).get("val_mae", float("nan"))
                into = now - self.started
                _log(f"  chunk {chunk}, epoch {epoch + 1}: val MAE {val_mae:.3f} ({into:.0f} s into the chunk)")

    return EpochProgress()


def _fit_chunk(model, features, fares, validation_rows, settings: dict, chunk: int, quiet: bool):
    """Fit one chunk with early stopping on val loss (its best epoch's weights restored).

    Returns (the best epoch, from 1; its logs; every epoch's logs), or
    (None, (epoch, "loss"|"val_loss", value), None) when a loss became NaN or infinite.
    """
    keras = keras_module()
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings["patience"], restore_best_weights=True
    )
    non_finite = _non_finite_loss_stopper()
    callbacks = [non_finite, stopper]
    if not quiet:
        callbacks.append(_epoch_progress(chunk, progress.DEFAULT_EVERY_SECONDS))
    history = model.fit(
        features,
        fares,
        batch_size=settings["batch_size"],
        epochs=settings["max_epochs_per_chunk"],
        validation_data=validation_rows,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    ).history
    if non_finite.bad is not None:
        return None, non_finite.bad, None
    best = int(np.argmin(history["val_loss"]))
    every_epoch = {name: [float(value) for value in values] for name, values in history.items()}
    return best + 1, {name: values[best] for name, values in every_epoch.items()}, every_epoch


def _evaluate(model, features, fares) -> dict:
    """MAE and RMSE of the model on (features, fares)."""
    predicted = model.predict(features, batch_size=VALIDATION_BATCH_SIZE, verbose=0).reshape(-1)
    errors = predicted.astype(np.float64) - fares.astype(np.float64)
    return {"mae": float(np.mean(np.abs(errors))), "rmse": float(math.sqrt(np.mean(errors**2)))}


def _build_or_restore(run_dir: str, state: dict):
    """A new compiled model, or the checkpointed one (weights and optimizer state) when resuming."""
    settings = state["settings"]
    if state["chunks_done"] == 0:
        return build_model(settings["learning_rate"], settings["loss"], seed=settings["seed"])
    if settings["seed"] is not None:
        keras_module().utils.set_random_seed(settings["seed"] + state["chunks_done"])
    # Checkpoints from before chunk-numbered files named theirs "model.keras".
    path = checkpoint_path(run_dir, state.get("checkpoint_model") or registry.MODEL_FILE)
    try:
        return registry.load_keras_model(path)
    except registry.UnreadableModelError as error:
        raise UsageError(
            f"the checkpoint of run {_name(run_dir)} is unreadable ({error.problem}): start a new run"
        ) from None


def _name(run_dir: str) -> str:
    """A run folder's name."""
    return run_dir.rstrip("/").rsplit("/", 1)[-1]


def run(args: argparse.Namespace, on_chunk: ChunkHook | None = None) -> dict:
    """Train (or resume) one run and save it in the registry; returns its metrics.

    `on_chunk(stage, chunk, model)` is called with stage "start" before and "end"
    after each chunk (chunk numbers from 1), once its checkpoint is written.
    The run folder appears with the first checkpoint and counts as finished only
    once `registry.save_run` has written its metrics.json (last).
    Raises UsageError for bad paths, changed shards or nothing to resume,
    reader.ShardError for bad shards (non-finite values included),
    registry.NoModelError for a registry path that cannot hold runs, RunFailed
    when the loss becomes NaN (the run is not registered; its last checkpoint stays),
    registry.RunBusyError when another trainer holds the run to resume.
    The returned metrics add "promoted" (bool) and "production" (the production run after this one).
    """
    locks: list = []
    try:
        return _run(args, on_chunk, locks)
    finally:
        for lock in locks:
            lock.release()


def _run(args: argparse.Namespace, on_chunk: ChunkHook | None, locks: list) -> dict:
    """`run`, with the run folder's lock appended to `locks` once taken."""
    registry.check_root(args.registry)
    registry.read_production(args.registry)  # an unreadable production.json stops the run now, not at its end
    if args.resume:
        run_dir, state = _resume_run(args, locks)
        _log(f"resuming {run_dir} after chunk {state['chunks_done']} ({state['rows_seen']:,} rows)")
    else:
        state = _fresh_state(args)
        run_dir = None
    settings = state["settings"]
    _check_chunk_memory(settings["chunk_size"])
    keras_module()  # TensorFlow's import is a start-up cost, not training time
    # Wall time counts from here; a resumed run adds what it spent before.
    started = time.perf_counter() - state["wall_seconds"]
    try:
        train_paths = reader.shard_paths(settings["train"])
        val_paths = reader.shard_paths(settings["val"])
    except reader.ShardError as error:
        raise UsageError(f"{error}: run `make preprocess` first, or pass --train / --val") from None
    inputs = input_fingerprint(train_paths, val_paths)
    if state["inputs"] is None:
        state["inputs"] = inputs
    else:
        check_inputs(state["inputs"], inputs, f"since run {_name(run_dir)} started")
    val_features, val_fares = reader.read_rows(settings["val"], settings["max_val_rows"])
    if len(val_fares) == 0:
        raise UsageError(f"the validation shards {settings['val']} hold no rows")
    _log(
        f"training on {len(train_paths)} train shard(s), {len(val_fares):,} validation rows "
        f"from {len(val_paths)} shard(s), chunks of {settings['chunk_size']:,} rows, loss {settings['loss']}"
    )

    model = _build_or_restore(run_dir, state)
    # In memory only while they are the checkpoint's own weights (see write_checkpoint).
    best_weights = model.get_weights() if state["chunks_done"] and state["best_chunk"] == state["chunks_done"] else None
    baseline = RunningLinearFit.from_state(state["baseline"])
    validation = (val_features, val_fares)
    validation_rows = validation_dataset(val_features, val_fares, VALIDATION_BATCH_SIZE)
    chunks = reader.iter_chunks(settings["train"], settings["chunk_size"], skip_rows=state["rows_seen"])
    # The pass's rate and ETA on every chunk line: rows left of the shards' (estimated) total at this run's rate.
    rows_left_at_start = max(reader.estimate_rows(train_paths) - state["rows_seen"], 0)
    rows_before, pass_started = state["rows_seen"], time.perf_counter()
    # A chunk's time runs from the end of the previous one: waiting for its rows counts.
    chunk_started = time.perf_counter()
    for features, fares in chunks:
        chunk = state["chunks_done"] + 1
        if on_chunk:
            on_chunk("start", chunk, model)
        baseline.update(manhattan_km_of(features), fares)
        best_epoch, logs, every_epoch = _fit_chunk(
            model, features, fares, validation_rows, settings, chunk, getattr(args, "quiet", False)
        )
        if best_epoch is None:
            raise RunFailed(_non_finite_loss_message(run_dir, state, chunk, *logs))
        epochs = len(every_epoch["val_loss"])
        improved = state["best_val_loss"] is None or logs["val_loss"] < state["best_val_loss"]
        if improved:
            state["best_chunk"], state["best_val_loss"] = chunk, logs["val_loss"]
            best_weights = model.get_weights()
        state["chunks_done"] = chunk
        state["rows_seen"] += len(fares)
        state["epochs"] += epochs
        state["baseline"] = baseline.state()
        seconds = time.perf_counter() - chunk_started
        state["history"].append(
            {
                "chunk": chunk,
                "rows": len(fares),
                "rows_seen": state["rows_seen"],
                "epochs": epochs,
                "train_mae": logs["mae"],
                "val_mae": logs["val_mae"],
                "val_loss": logs["val_loss"],
                "best_epoch": best_epoch,
                "epoch_train_mae": every_epoch["mae"],
                "epoch_val_mae": every_epoch["val_mae"],
                "seconds": seconds,
            }
        )
        state["seconds"] += seconds
        state["wall_seconds"] = time.perf_counter() - started
        if run_dir is None:
            run_dir = _first_checkpoint(args.registry, model, state, best_weights, locks)
        else:
            write_checkpoint(run_dir, model, state, best_weights)
        if not getattr(args, "quiet", False):
            pace = progress.rate_text(
                state["rows_seen"] - rows_before, rows_left_at_start, time.perf_counter() - pass_started
            )
            _log(
                f"chunk {chunk}: rows seen {state['rows_seen']:,}  train MAE {logs['mae']:.3f}  "
                f"val MAE {logs['val_mae']:.3f}{' *' if improved else ''}  ({epochs} epochs, "
                f"{time.perf_counter() - chunk_started:.1f} s; {pace})"
            )
        if on_chunk:
            on_chunk("end", chunk, model)
        chunk_started = time.perf_counter()
    if state["chunks_done"] == 0:
        raise UsageError(f"the train shards {settings['train']} hold no rows")
    # Shards rewritten under a running trainer: what it read is neither the old data nor the new.
    check_inputs(state["inputs"], input_fingerprint(train_paths, val_paths), f"while run {_name(run_dir)} trained")
    metrics = _finish(run_dir, model, state, baseline, validation, train_paths, val_paths, started, args)
    return _promote_if_blessed(metrics, args.registry)


def _first_checkpoint(registry_dir: str, model, state: dict, best_weights, locks: list) -> str:
    """Create the run folder, lock it and write its first checkpoint; no folder is left if that fails."""
    run_dir = registry.new_run(registry_dir)
    _log(f"run {run_dir} (checkpointed after every chunk: `--resume {_name(run_dir)}` continues it)")
    try:
        # The folder is new and ours (created exclusively); the lock keeps a `--resume` of it out.
        locks.append(registry.lock_run(run_dir))
        write_checkpoint(run_dir, model, state, best_weights)
    except BaseException:
        storage.remove_tree(run_dir)
        raise
    return run_dir


def _non_finite_loss_message(run_dir: str | None, state: dict, chunk: int, epoch: int, name: str, value: float) -> str:
    """The one line for a loss that became NaN: what happened, what is kept, what to try."""
    if run_dir is None:
        kept = "no run folder was created"
    else:
        kept = (
            f"run {_name(run_dir)} is not registered as finished; its checkpoint after chunk "
            f"{state['chunks_done']} is kept"
        )
    return (
        f"the {name.replace('_', ' ')} became {value} in chunk {chunk}, epoch {epoch}: {kept}; "
        "try a lower --learning_rate or check the shards"
    )


def _score_production(registry_dir: str, val_features, val_fares) -> tuple[str | None, float | None, str | None]:
    """(production run or None, its val MAE on these rows or None, why it could not be scored or None)."""
    production = registry.production_run(registry_dir)
    if production is None:
        return None, None, None
    try:
        model = registry.load_run_model(registry.run_path(production, registry_dir))
    except registry.NoModelError as error:  # unreadable, another feature contract, no longer finished
        return production, None, str(error)
    mae = _evaluate(model, val_features, val_fares)["mae"]
    if not math.isfinite(mae):
        return production, None, f"it answers non-finite fares (MAE {mae})"
    return production, mae, None


def _finish(run_dir, model, state, baseline, validation, train_paths, val_paths, started, args) -> dict:
    """Restore the best chunk's weights, score (model, baseline, production: blessing), save the run
    and drop its checkpoint."""
    from taxifare_core.training.plots import training_curve_png

    settings = state["settings"]
    if state["best_chunk"] != state["chunks_done"]:
        load_weights(model, checkpoint_path(run_dir, state["best_weights_file"]))
    val_features, val_fares = validation
    scores = _evaluate(model, val_features, val_fares)
    if not all(math.isfinite(value) for value in scores.values()):
        raise RunFailed(
            f"the model of run {_name(run_dir)} predicts non-finite fares on the validation rows "
            f"(MAE {scores['mae']}): not registered; try a lower --learning_rate or check the shards"
        )
    distances = manhattan_km_of(val_features)
    baseline_errors = baseline.predict(distances) - val_fares.astype(np.float64)
    name = _name(run_dir)
    metrics = {
        "run": name,
        "val_mae": scores["mae"],
        "val_rmse": scores["rmse"],
        "baseline_mae": float(np.mean(np.abs(baseline_errors))),
        "baseline_rmse": float(math.sqrt(np.mean(baseline_errors**2))),
        "baseline_intercept": baseline.intercept,
        "baseline_slope_per_km": baseline.slope,
        "rows": state["rows_seen"],
        "val_rows": len(val_fares),
        "chunks": state["chunks_done"],
        "epochs": state["epochs"],
        "best_chunk": state["best_chunk"],
        "train_seconds": state["seconds"],
        "seconds": time.perf_counter() - started,
        "train_data": settings["train"],
        "val_data": settings["val"],
        "train_shards": len(train_paths),
        "val_shards": len(val_paths),
        "history": state["history"],
        "data_stats": stats_file.copy_stats_beside(settings["train"], run_dir),
    }
    min_gain = getattr(args, "bless_min_gain", blessing.DEFAULT_MIN_GAIN)
    max_regression = getattr(args, "bless_max_regression", blessing.DEFAULT_MAX_REGRESSION)
    production, production_mae, problem = _score_production(args.registry, val_features, val_fares)
    metrics.update(
        blessing.decide(
            metrics["val_mae"],
            metrics["baseline_mae"],
            min_gain,
            production_mae=production_mae,
            production_run=production,
            max_regression=max_regression,
            production_problem=problem,
            rows=len(val_fares),
        )
    )
    metrics["bless_min_gain"], metrics["bless_max_regression"] = min_gain, max_regression
    params = {
        **settings,
        "incremental": True,
        "model": "contract section 5",
        "registry": registry.registry_root(run_dir.rstrip("/").rsplit("/", 1)[0]),
    }
    png = training_curve_png(state["history"], metrics["baseline_mae"], title=f"run {name}")
    registry.save_run(run_dir, model, params, metrics, png)
    storage.remove_tree(storage.join(run_dir, registry.CHECKPOINT_DIR))
    gain = 100 * (metrics["baseline_mae"] - metrics["val_mae"]) / metrics["baseline_mae"]
    _log(
        f"done: {metrics['rows']:,} rows in {metrics['chunks']} chunk(s), {metrics['epochs']} epochs, "
        f"{metrics['train_seconds']:.0f} s of training; best chunk {metrics['best_chunk']}"
    )
    _log(
        f"validation ({metrics['val_rows']:,} rows): model MAE ${metrics['val_mae']:.3f} "
        f"(RMSE ${metrics['val_rmse']:.3f}) vs baseline MAE ${metrics['baseline_mae']:.3f}: "
        f"{abs(gain):.1f}% {'better' if gain >= 0 else 'worse'} than the baseline"
    )
    _log(f"saved {storage.join(run_dir, registry.MODEL_FILE)}")
    return metrics


def _promote_if_blessed(metrics: dict, registry_dir: str) -> dict:
    """Promote a blessed run (unless production changed since it was evaluated); the closing lines say why."""
    name, reasons = metrics["run"], "; ".join(metrics["reasons"])
    metrics = {**metrics, "promoted": False, "production": metrics["compared_to"]}
    if not metrics["blessed"]:
        stays = (
            f"production stays run {metrics['compared_to']}"
            if metrics["compared_to"]
            else "there is still no production model"
        )
        _log(f"not blessed: {reasons}")
        _log(f"{stays}; run {name} is kept (`python -m pipelines.registry promote {name} --force` serves it anyway)")
        return metrics
    _log(f"blessed: {reasons}")
    try:
        registry.promote(name, registry_dir, by=f"pipelines.train ({registry.who()})", expected=metrics["compared_to"])
    except registry.ProductionChangedError as error:
        metrics["production"] = registry.production_run(registry_dir)
        _log(f"not promoted: {error}")
        return metrics
    replaced = f" (replacing run {metrics['compared_to']})" if metrics["compared_to"] else ""
    _log(f"promoted run {name} to production{replaced}: served by default from now on")
    return {**metrics, "promoted": True, "production": name}
