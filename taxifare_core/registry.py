"""The model registry: one folder per training run, named by its UTC start time, local or gs://.

    REGISTRY/20261126T091500.123456Z/
        model.keras          the trained network
        params.json          how it was trained (flags, data paths)
        metrics.json         val MAE / RMSE, baseline MAE, rows, chunks, seconds, data paths
        training_curve.png   train / val MAE per chunk and the baseline
        checkpoint/          while training only: last chunk's model + state.json (for --resume)

A run counts as finished once `model.keras` is written (last); `load_model()`
takes the latest finished run or a named one. Metadata is JSON, never pickle.

    >>> model = load_model()                       # latest run in local_registry_path()
    >>> load_metrics("20261126T091500.123456Z")["val_mae"]
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone

from taxifare_core import contract, storage

MODEL_FILE = "model.keras"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"
RUN_NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# A run folder's name: the timestamp, plus "-N" when two runs start in the same microsecond.
_RUN_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(-\d+)?$")


class NoModelError(LookupError):
    """The registry holds no finished run (or not the one asked for)."""


def registry_root(registry: str | None = None) -> str:
    """The registry folder: the argument, else the origin course's training_outputs."""
    return str(registry) if registry else str(contract.local_registry_path())


def new_run(registry: str | None = None) -> str:
    """Create a fresh run folder named by the current UTC time; returns its path."""
    root = registry_root(registry)
    storage.makedirs(root)
    stamp = datetime.now(timezone.utc).strftime(RUN_NAME_FORMAT)
    for attempt in range(1000):
        name = stamp if attempt == 0 else f"{stamp}-{attempt}"
        path = storage.join(root, name)
        if storage.create_folder_exclusive(path):  # atomic: two trainers never share a folder
            return path
    raise RuntimeError(f"could not create a new run folder in {root}")


def run_names(registry: str | None = None, finished: bool = True) -> list[str]:
    """Run names, oldest first; only runs with a saved model unless `finished` is False."""
    root = registry_root(registry)
    if not storage.isdir(root):
        return []
    names = [
        name for name in storage.listdir(root)
        if _RUN_NAME.match(name) and storage.isdir(storage.join(root, name))
    ]
    names.sort(key=_run_sort_key)
    if finished:
        names = [name for name in names if storage.exists(storage.join(root, name, MODEL_FILE))]
    return names


def _run_sort_key(name: str) -> tuple[str, int]:
    """Chronological order: the timestamp, then the collision suffix as a number."""
    stamp, _, suffix = name.partition("-")
    return stamp, int(suffix or 0)


def unfinished_runs(registry: str | None = None) -> list[str]:
    """Names of runs that stopped before saving their model but left a checkpoint, oldest first."""
    root = registry_root(registry)
    return [
        name for name in run_names(root, finished=False)
        if not storage.exists(storage.join(root, name, MODEL_FILE))
        and storage.exists(storage.join(root, name, CHECKPOINT_DIR, CHECKPOINT_STATE_FILE))
    ]


def run_path(name: str | None = None, registry: str | None = None) -> str:
    """Folder of the named finished run, or of the latest one; NoModelError if none."""
    root = registry_root(registry)
    names = run_names(root)
    if name is None:
        if not names:
            raise NoModelError(f"no model in {root}: run `make train` first")
        return storage.join(root, names[-1])
    if name not in names:
        raise NoModelError(f"no finished run {name!r} in {root} (runs: {', '.join(names) or 'none'})")
    return storage.join(root, name)


def write_json(path: str, payload: dict) -> None:
    """Write a dict as indented JSON."""
    storage.write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> dict:
    """Read a JSON file."""
    return json.loads(storage.read_text(path))


def save_keras_model(model, path: str) -> None:
    """Save a Keras model to a local or remote `.keras` path (via a local temp file)."""
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, MODEL_FILE)
        model.save(local)
        storage.copy_file(local, path)


def load_keras_model(path: str):
    """Load a `.keras` file from a local or remote path."""
    from taxifare_core.model import keras_module

    keras = keras_module()
    if not storage.is_remote(path):
        return keras.models.load_model(path)
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, MODEL_FILE)
        storage.copy_file(path, local)
        return keras.models.load_model(local)


def save_run(run_dir: str, model, params: dict, metrics: dict, curve_png: bytes | None = None) -> str:
    """Write a finished run's files; the model goes last so a half-written run never counts."""
    write_json(storage.join(run_dir, PARAMS_FILE), params)
    write_json(storage.join(run_dir, METRICS_FILE), metrics)
    if curve_png is not None:
        storage.write_bytes(storage.join(run_dir, CURVE_FILE), curve_png)
    save_keras_model(model, storage.join(run_dir, MODEL_FILE))
    return run_dir


def load_model(name: str | None = None, registry: str | None = None):
    """The Keras model of the latest finished run, or of the named one."""
    return load_keras_model(storage.join(run_path(name, registry), MODEL_FILE))


def load_metrics(name: str | None = None, registry: str | None = None) -> dict:
    """metrics.json of the latest (or named) finished run."""
    return read_json(storage.join(run_path(name, registry), METRICS_FILE))


def load_params(name: str | None = None, registry: str | None = None) -> dict:
    """params.json of the latest (or named) finished run."""
    return read_json(storage.join(run_path(name, registry), PARAMS_FILE))
