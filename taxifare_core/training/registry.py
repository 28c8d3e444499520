"""The model registry: one folder per training run, named by its UTC start time, local or gs://.

    REGISTRY/20261126T091500.123456Z/
        model.keras          the trained network
        params.json          how it was trained (flags, data paths)
        metrics.json         val MAE / RMSE, baseline MAE, rows, chunks, seconds, data paths
        training_curve.png   train / val MAE per chunk and the baseline
        checkpoint/          while training only: last chunk's model + state.json (for --resume)

A run is finished once `metrics.json` is written: `save_run` writes it last,
after `model.keras`, each file whole (temp file + rename on disk, one object
replaced whole on Cloud Storage), so `load_model()`, `run_path()` and
`run_names()` only ever see finished runs, and an interrupted run is only
`unfinished_runs()` material (resumable from its checkpoint). A model.keras
that cannot be read raises UnreadableModelError naming another run to use.
Metadata is JSON (never NaN: strict JSON), never pickle.

    >>> model = load_model()                       # latest run in local_registry_path()
    >>> load_metrics("20261126T091500.123456Z")["val_mae"]
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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


# Members every Keras 3 `.keras` archive holds.
_KERAS_MEMBERS = ("config.json", "model.weights.h5")
# How many other runs' archives are checked when looking for one to suggest.
_HINT_CANDIDATES = 5


class NoModelError(LookupError):
    """The registry holds no finished run (or not the one asked for)."""


class BadRegistryError(NoModelError):
    """The registry path cannot hold runs (a file, or under one)."""


class UnreadableModelError(NoModelError):
    """A model.keras that exists but cannot be loaded (empty, truncated, corrupt).

    `problem` says what is wrong; from `load_model()` the message names the
    newest other finished run whose archive is sound (`alternative`, or None).
    """

    def __init__(self, message: str, problem: str, alternative: str | None = None):
        super().__init__(message)
        self.problem, self.alternative = problem, alternative


def registry_root(registry: str | None = None) -> str:
    """The registry folder: the argument, else the origin course's training_outputs."""
    return str(registry) if registry else str(contract.local_registry_path())


def check_root(registry: str | None = None) -> str:
    """The registry folder; BadRegistryError when it is a file (it may not exist yet)."""
    root = registry_root(registry)
    if storage.exists(root) and not storage.isdir(root):
        raise BadRegistryError(f"the registry {root} is a file, not a folder: give a folder for the runs")
    return root


def new_run(registry: str | None = None) -> str:
    """Create a fresh run folder named by the current UTC time; returns its path."""
    root = check_root(registry)
    try:
        storage.makedirs(root)
    except OSError as error:
        raise BadRegistryError(f"cannot create the registry {root}: {error.strerror or error}") from None
    stamp = datetime.now(timezone.utc).strftime(RUN_NAME_FORMAT)
    for attempt in range(1000):
        name = stamp if attempt == 0 else f"{stamp}-{attempt}"
        path = storage.join(root, name)
        if storage.create_folder_exclusive(path):  # atomic: two trainers never share a folder
            return path
    raise RuntimeError(f"could not create a new run folder in {root}")


def run_names(registry: str | None = None, finished: bool = True) -> list[str]:
    """Run names, oldest first; only finished runs (metrics.json and model.keras) unless `finished` is False."""
    root = check_root(registry)
    if not storage.isdir(root):
        return []
    names = [
        name for name in storage.listdir(root)
        if _RUN_NAME.match(name) and storage.isdir(storage.join(root, name))
    ]
    names.sort(key=_run_sort_key)
    if finished:
        names = [name for name in names if is_finished(storage.join(root, name))]
    return names


def is_finished(run_dir: str) -> bool:
    """True when the run saved everything: metrics.json (written last) and model.keras."""
    return storage.exists(storage.join(run_dir, METRICS_FILE)) and storage.exists(storage.join(run_dir, MODEL_FILE))


def _run_sort_key(name: str) -> tuple[str, int]:
    """Chronological order: the timestamp, then the collision suffix as a number."""
    stamp, _, suffix = name.partition("-")
    return stamp, int(suffix or 0)


def unfinished_runs(registry: str | None = None) -> list[str]:
    """Names of runs that stopped before finishing but left a checkpoint, oldest first."""
    root = registry_root(registry)
    return [
        name for name in run_names(root, finished=False)
        if not is_finished(storage.join(root, name))
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
    """Write a dict as indented, strict JSON (ValueError on NaN or infinity: map them first)."""
    storage.write_text(path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str) -> dict:
    """Read a JSON file."""
    return json.loads(storage.read_text(path))


def save_keras_model(model, path: str) -> None:
    """Save a Keras model to a local or remote `.keras` path (via a local temp file)."""
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, MODEL_FILE)
        model.save(local)
        storage.copy_file(local, path)


@contextmanager
def _local_file(path: str) -> Iterator[str]:
    """A local path holding the file: itself on disk, a temporary download for gs://."""
    if not storage.is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, os.path.basename(path))
        storage.copy_file(path, local)
        yield local


def _archive_problem(local_path: str) -> str | None:
    """What makes a local `.keras` file unloadable (empty, truncated, corrupt), or None.

    A `.keras` file is a zip archive: its central directory is written at the
    end, so a truncated file is not a zip at all. Checked without TensorFlow.
    """
    if not os.path.isfile(local_path):
        return "missing"
    size = os.path.getsize(local_path)
    if size == 0:
        return "empty file"
    if not zipfile.is_zipfile(local_path):
        return f"not a .keras archive, {size:,} bytes: truncated or overwritten"
    try:
        with zipfile.ZipFile(local_path) as archive:
            missing = [member for member in _KERAS_MEMBERS if member not in archive.namelist()]
            if missing:
                return f"the archive lacks {', '.join(missing)}"
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"corrupt archive: {error}"
    return f"corrupt archive member {corrupt}" if corrupt else None


def _first_line(error: Exception) -> str:
    """An exception's first line, shortened: Keras errors run over several lines."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_keras_model(path: str):
    """Load a `.keras` file from a local or remote path; UnreadableModelError when it cannot be."""
    from taxifare_core.training.model import keras_module

    keras = keras_module()
    try:
        with _local_file(path) as local:
            problem = _archive_problem(local)
            if problem is None:
                try:
                    return keras.models.load_model(local)
                except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
                    problem = _first_line(error)
    except FileNotFoundError:
        problem = "missing"
    raise UnreadableModelError(f"{path} is unreadable ({problem})", problem)


def model_problem(run_dir: str) -> str | None:
    """What makes a run's model.keras unloadable, or None; a cheap check without TensorFlow."""
    try:
        with _local_file(storage.join(run_dir, MODEL_FILE)) as local:
            return _archive_problem(local)
    except FileNotFoundError:
        return "missing"


def _unreadable(run_dir: str, problem: str) -> UnreadableModelError:
    """The error for a run's unreadable model, naming the newest other finished run that looks sound."""
    root, name = run_dir.rstrip("/").rsplit("/", 1)
    others = [other for other in reversed(run_names(root)) if other != name][:_HINT_CANDIDATES]
    alternative = next((other for other in others if model_problem(storage.join(root, other)) is None), None)
    hint = f"use --run {alternative}" if alternative else f"no other finished run in {root}: train a new one"
    return UnreadableModelError(f"model.keras of run {name} is unreadable ({problem}): {hint}", problem, alternative)


def check_run_model(run_dir: str) -> None:
    """UnreadableModelError (with a run to use instead) when the run's model.keras is not a sound archive."""
    problem = model_problem(run_dir)
    if problem is not None:
        raise _unreadable(run_dir, problem)


def load_run_model(run_dir: str):
    """The Keras model of a run folder; UnreadableModelError naming another run when it cannot be read or used."""
    try:
        model = load_keras_model(storage.join(run_dir, MODEL_FILE))
    except UnreadableModelError as error:
        raise _unreadable(run_dir, error.problem) from None
    check_usable_run(run_dir, model)
    return model


def check_usable_run(run_dir: str, model) -> None:
    """UnreadableModelError, naming another run, when a loaded run cannot price the contract's rides.

    Its metrics.json must be a JSON object and its model must map the contract's
    N_FEATURES columns to one fare: a model of another width would fail on every ride.
    """
    try:
        metrics = read_json(storage.join(run_dir, METRICS_FILE))
        problem = None if isinstance(metrics, dict) else f"{METRICS_FILE} is a JSON {type(metrics).__name__}, not an object"
    except (OSError, ValueError, storage.StorageError) as error:
        problem = f"{METRICS_FILE} is unreadable: {_first_line(error)}"
    if problem is None:
        inputs, outputs = tuple(model.input_shape)[1:], tuple(model.output_shape)[1:]
        if inputs != (contract.N_FEATURES,):
            problem = f"its model takes inputs of shape {inputs}; the contract's rides have {contract.N_FEATURES} features"
        elif outputs != (1,):
            problem = f"its model gives outputs of shape {outputs}, not one fare"
    if problem is not None:
        root, name = run_dir.rstrip("/").rsplit("/", 1)
        alternative = _unreadable(run_dir, problem).alternative
        hint = f"use --run {alternative}" if alternative else f"no other finished run in {root}: train a new one"
        raise UnreadableModelError(f"run {name} cannot price rides ({problem}): {hint}", problem, alternative)


def save_run(run_dir: str, model, params: dict, metrics: dict, curve_png: bytes | None = None) -> str:
    """Write a finished run's files; metrics.json goes last: the run counts only once it is written.

    Anything else a run folder should hold must be written before this call.
    """
    write_json(storage.join(run_dir, PARAMS_FILE), params)
    if curve_png is not None:
        storage.write_bytes(storage.join(run_dir, CURVE_FILE), curve_png)
    save_keras_model(model, storage.join(run_dir, MODEL_FILE))
    for name in storage.listdir(run_dir):  # a killed earlier save's temp files (storage.write_bytes)
        if ".tmp-" in name:
            storage.remove_file(storage.join(run_dir, name))
    write_json(storage.join(run_dir, METRICS_FILE), metrics)
    return run_dir


def load_model(name: str | None = None, registry: str | None = None):
    """The Keras model of the latest finished run, or of the named one.

    NoModelError when there is none; UnreadableModelError (a NoModelError) when
    its model.keras is empty, truncated or corrupt, naming another run to use.
    """
    return load_run_model(run_path(name, registry))


def load_metrics(name: str | None = None, registry: str | None = None) -> dict:
    """metrics.json of the latest (or named) finished run."""
    return read_json(storage.join(run_path(name, registry), METRICS_FILE))


def load_params(name: str | None = None, registry: str | None = None) -> dict:
    """params.json of the latest (or named) finished run."""
    return read_json(storage.join(run_path(name, registry), PARAMS_FILE))
