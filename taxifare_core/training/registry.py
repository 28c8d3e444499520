"""The model registry: one folder per training run, named by its UTC start time, local or gs://.

    REGISTRY/20261126T091500.123456Z-1a2b3c/     (outputs.run_id(); runs named before it lack the hex, still read)
        model.keras          the trained network
        params.json          how it was trained (flags, data paths)
        metrics.json         val MAE / RMSE, baseline MAE, rows, chunks, seconds, data paths
        training_curve.png   train / val MAE per chunk and the baseline
        checkpoint/          while training only: last chunk's model + state.json (for --resume)
        _LOCK.json           while a trainer works on the run (one trainer per run: `lock_run`)
    REGISTRY/production.json the production run and who replaced whom, when, at what MAE

A run is served by default only once promoted: `run_path(None)`, `load_model()`
and `load_metrics()` resolve to the production run named in production.json
(`promote`, `rollback`; written whole, under a lock on disk and with a
generation precondition on Cloud Storage), never merely to the latest run.
Each run records the hash of the feature contract it was trained on
(`feature_contract_hash`, in params.json); a run whose hash differs from this
code's is refused when loaded (FeatureContractError), one without a hash (saved
before hashes existed) is loaded with a one-line warning.

A run is finished once `metrics.json` is written: `save_run` writes it last,
after `model.keras`, each file whole (temp file + rename on disk, one object
replaced whole on Cloud Storage), so `load_model()`, `run_path()` and
`run_names()` only ever see finished runs, and an interrupted run is only
`unfinished_runs()` material (resumable from its checkpoint). A model.keras
that cannot be read raises UnreadableModelError naming another run to use.
Metadata is JSON (never NaN: strict JSON), never pickle.

    model = load_model()                       # the production run of local_registry_path()
    load_metrics("20261126T091500.123456Z")["val_mae"]
    promote("20261126T091500.123456Z")         # or: python -m pipelines.registry promote RUN
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from taxifare_core import contract, storage
from taxifare_core.storage import outputs

MODEL_FILE = "model.keras"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"
RUN_NAME_FORMAT = outputs.RUN_TIME_FORMAT
# A run folder's name (outputs.run_id): the timestamp and 6 hex digits; older runs: the timestamp, "-N" on a clash.
_RUN_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(-\d+|-[0-9a-f]{6})?$")
PRODUCTION_FILE = "production.json"
# params.json's key for the hash of the feature contract the run was trained on.
FEATURE_CONTRACT_KEY = "feature_contract"
# How long a promotion waits for another one to finish writing production.json (local lock).
PRODUCTION_LOCK_SECONDS = 10.0
# Compare-and-swap attempts on Cloud Storage before a promotion gives up.
_PRODUCTION_CAS_ATTEMPTS = 5
PROMOTE_HINT = "python -m pipelines.registry promote RUN"


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


class FeatureContractError(NoModelError):
    """The run was trained on another feature contract (column names and order, encoding) than this code's."""


class PromotionError(NoModelError):
    """A run that may not be promoted (not blessed, unsound), or nothing to roll back to: one line."""


class ProductionChangedError(RuntimeError):
    """production.json changed between reading and writing it (another promotion won): one line."""


class RunBusyError(RuntimeError):
    """Another live trainer holds the run folder (two `--resume` of one run): one line."""


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
    for _ in range(1000):
        path = storage.join(root, outputs.run_id())
        if storage.create_folder_exclusive(path):  # atomic: two trainers never share a folder
            return path
    raise RuntimeError(f"could not create a new run folder in {root}")


def run_names(registry: str | None = None, finished: bool = True) -> list[str]:
    """Run names, oldest first; only finished runs (metrics.json and model.keras) unless `finished` is False."""
    root = check_root(registry)
    if not storage.isdir(root):
        return []
    names = [
        name for name in storage.listdir(root) if _RUN_NAME.match(name) and storage.isdir(storage.join(root, name))
    ]
    names.sort(key=_run_sort_key)
    if finished:
        names = [name for name in names if is_finished(storage.join(root, name))]
    return names


def is_finished(run_dir: str) -> bool:
    """True when the run saved everything: metrics.json (written last) and model.keras."""
    return outputs.is_finished(run_dir, METRICS_FILE) and storage.exists(storage.join(run_dir, MODEL_FILE))


def _run_sort_key(name: str) -> tuple[str, int, str]:
    """Chronological order: the timestamp, then an older run's clash number ("-2" before "-10")."""
    stamp, _, suffix = name.partition("-")
    return stamp, len(suffix), suffix


def unfinished_runs(registry: str | None = None) -> list[str]:
    """Names of runs that stopped before finishing but left a checkpoint, oldest first."""
    root = registry_root(registry)
    return [
        name
        for name in run_names(root, finished=False)
        if not is_finished(storage.join(root, name))
        and storage.exists(storage.join(root, name, CHECKPOINT_DIR, CHECKPOINT_STATE_FILE))
    ]


def run_path(name: str | None = None, registry: str | None = None) -> str:
    """Folder of the named finished run, or of the production run; NoModelError if none.

    Never the latest run by default: a run serves only once promoted (`promote`).
    """
    root = registry_root(registry)
    names = run_names(root)
    if name is None:
        if not names:
            raise NoModelError(f"no model in {root}: run `make train` first")
        name = production_run(root)
        if name is None:
            raise NoModelError(
                f"no production model in {root}: no run was ever promoted; promote one with "
                f"`{PROMOTE_HINT}` or pass --run RUN (latest finished run: {names[-1]})"
            )
        if name not in names:
            raise NoModelError(
                f"the production run {name} is no longer a finished run in {root}: "
                f"promote another with `{PROMOTE_HINT}` or pass --run RUN"
            )
        return storage.join(root, name)
    if name not in names:
        raise NoModelError(f"no finished run {name!r} in {root} (runs: {', '.join(names) or 'none'})")
    return storage.join(root, name)


def latest_run(registry: str | None = None) -> str | None:
    """Name of the newest finished run (promoted or not), None when there is none."""
    names = run_names(registry)
    return names[-1] if names else None


def run_name(run_dir: str) -> str:
    """A run folder's name."""
    return str(run_dir).rstrip("/").rsplit("/", 1)[-1]


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
    """UnreadableModelError (with a run to use instead) when the run's model.keras is not a sound archive;
    FeatureContractError when it was trained on another feature contract."""
    check_feature_contract(run_dir)
    problem = model_problem(run_dir)
    if problem is not None:
        raise _unreadable(run_dir, problem)


def load_run_model(run_dir: str):
    """The Keras model of a run folder; UnreadableModelError naming another run when it cannot be read or used,
    FeatureContractError when it was trained on another feature contract."""
    check_feature_contract(run_dir)
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
        problem = (
            None if isinstance(metrics, dict) else f"{METRICS_FILE} is a JSON {type(metrics).__name__}, not an object"
        )
    except (OSError, ValueError, storage.StorageError) as error:
        problem = f"{METRICS_FILE} is unreadable: {_first_line(error)}"
    if problem is None:
        inputs, outputs = tuple(model.input_shape)[1:], tuple(model.output_shape)[1:]
        if inputs != (contract.N_FEATURES,):
            problem = (
                f"its model takes inputs of shape {inputs}; the contract's rides have {contract.N_FEATURES} features"
            )
        elif outputs != (1,):
            problem = f"its model gives outputs of shape {outputs}, not one fare"
    if problem is not None:
        root, name = run_dir.rstrip("/").rsplit("/", 1)
        alternative = _unreadable(run_dir, problem).alternative
        hint = f"use --run {alternative}" if alternative else f"no other finished run in {root}: train a new one"
        raise UnreadableModelError(f"run {name} cannot price rides ({problem}): {hint}", problem, alternative)


# --- the feature contract a run was trained on -------------------------------------------------


def feature_contract() -> dict:
    """What a model's input means: the 65 column names in order, the encoding version and its constants."""
    return {
        "columns": list(contract.FEATURE_NAMES),
        "encoding_version": contract.FEATURE_ENCODING_VERSION,
        "constants": {
            "time_origin": contract.TIME_ORIGIN.isoformat(),
            "days_scale": contract.DAYS_SCALE,
            "distance_scale_km": contract.DISTANCE_SCALE_KM,
            "passenger_scale": contract.PASSENGER_SCALE,
            "local_timezone": contract.LOCAL_TIMEZONE,
            "geohash_precision": contract.GEOHASH_PRECISION,
        },
    }


def feature_contract_hash(spec: dict | None = None) -> str:
    """A short, stable hash of `feature_contract()` (or of `spec`): "sha256:" and 16 hex digits."""
    text = json.dumps(spec if spec is not None else feature_contract(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# Runs already warned about (one warning per run per process, not one per load).
_warned_unhashed: set[str] = set()


def check_feature_contract(run_dir: str) -> None:
    """FeatureContractError when the run's recorded feature-contract hash differs from this code's.

    A run without one (saved before hashes were recorded, or params.json
    unreadable) is accepted with a one-line warning on stderr.
    """
    name = run_name(run_dir)
    try:
        params = read_json(storage.join(run_dir, PARAMS_FILE))
    except (OSError, ValueError, UnicodeDecodeError):
        params = None
    recorded = params.get(FEATURE_CONTRACT_KEY) if isinstance(params, dict) else None
    if recorded is None:
        if run_dir not in _warned_unhashed:
            _warned_unhashed.add(run_dir)
            print(
                f"warning: run {name} records no feature-contract hash (saved before they existed): "
                "its inputs are assumed to match this code's features",
                file=sys.stderr,
                flush=True,
            )
        return
    expected = feature_contract_hash()
    if recorded != expected:
        raise FeatureContractError(
            f"run {name} was trained on another feature contract ({recorded}, this code's is {expected}): "
            "its inputs would be misread; retrain on this code's features or use another --run"
        )


def save_run(run_dir: str, model, params: dict, metrics: dict, curve_png: bytes | None = None) -> str:
    """Write a finished run's files; metrics.json goes last: the run counts only once it is written.

    Anything else a run folder should hold must be written before this call.
    params.json gets this code's feature-contract hash unless `params` names one.
    """
    write_json(storage.join(run_dir, PARAMS_FILE), {FEATURE_CONTRACT_KEY: feature_contract_hash(), **params})
    if curve_png is not None:
        storage.write_bytes(storage.join(run_dir, CURVE_FILE), curve_png)
    save_keras_model(model, storage.join(run_dir, MODEL_FILE))
    for name in storage.listdir(run_dir):  # a killed earlier save's temp files (storage.write_bytes)
        if ".tmp-" in name:
            storage.remove_file(storage.join(run_dir, name))
    write_json(storage.join(run_dir, METRICS_FILE), metrics)
    return run_dir


def load_model(name: str | None = None, registry: str | None = None):
    """The Keras model of the production run, or of the named one.

    NoModelError when there is none; UnreadableModelError (a NoModelError) when
    its model.keras is empty, truncated or corrupt, naming another run to use.
    """
    return load_run_model(run_path(name, registry))


def load_metrics(name: str | None = None, registry: str | None = None) -> dict:
    """metrics.json of the production (or named) run."""
    return read_json(storage.join(run_path(name, registry), METRICS_FILE))


# --- the production run: promote, roll back ----------------------------------------------------


def production_path(registry: str | None = None) -> str:
    """REGISTRY/production.json."""
    return storage.join(registry_root(registry), PRODUCTION_FILE)


def _parse_production(text: str | bytes, path: str) -> dict:
    """production.json's content; BadRegistryError (one line) when it is not the expected object."""
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        record, problem = None, f"not JSON: {error}"
    else:
        problem = "not an object naming a run"
    if not (
        isinstance(record, dict) and isinstance(record.get("run"), str) and isinstance(record.get("history", []), list)
    ):
        raise BadRegistryError(f"{path} is unreadable ({problem}): fix it, or rewrite it with `{PROMOTE_HINT}`")
    record.setdefault("history", [])
    return record


def read_production(registry: str | None = None) -> dict | None:
    """production.json ({"run", "since", "val_mae", "history": [...]}), None when no run was ever promoted."""
    root = check_root(registry)
    path = storage.join(root, PRODUCTION_FILE)
    try:
        if not storage.isfile(path):
            return None
        text = storage.read_text(path)
    except FileNotFoundError:  # removed between the two calls
        return None
    return _parse_production(text, path)


def production_run(registry: str | None = None) -> str | None:
    """Name of the production run, None when no run was ever promoted."""
    record = read_production(registry)
    return record["run"] if record else None


def who() -> str:
    """user@host, for the history of production.json."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's bare uid)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def _local_production_lock(root: str) -> Iterator[None]:
    """An exclusive flock on the registry folder itself (no lock file to leave behind), bounded wait."""
    import fcntl

    fd = os.open(os.path.expanduser(root), os.O_RDONLY)
    try:
        deadline = time.monotonic() + PRODUCTION_LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProductionChangedError(
                        f"another promotion in {root} held its lock for over {PRODUCTION_LOCK_SECONDS:.0f} s: try again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def _update_production(root: str, change: Callable[[dict | None], dict]) -> dict:
    """Read production.json, apply `change` to it, write the result whole; returns what was written.

    On disk: under a lock on the registry folder, written by temp file + rename.
    On Cloud Storage: a compare-and-swap on the object's generation, retried when
    another writer got in between. `change` may raise to abort (nothing written).
    """
    path = storage.join(root, PRODUCTION_FILE)
    if not storage.is_remote(root):
        storage.makedirs(root)
        with _local_production_lock(root):
            record = change(read_production(root))
            write_json(path, record)
            return record
    from taxifare_core.storage import gcs

    for _ in range(_PRODUCTION_CAS_ATTEMPTS):
        found = gcs.read_with_generation(path)
        current = _parse_production(found[0], path) if found else None
        record = change(current)
        data = (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
        if gcs.replace_if_generation(path, data, found[1] if found else 0):
            return record
    raise ProductionChangedError(f"{path} kept changing while this promotion wrote it: try again")


_ANY = object()


def _finite(value):
    """A metric for JSON: None unless a finite number."""
    return value if isinstance(value, (int, float)) and value == value and abs(value) != float("inf") else None


def promote(
    name: str,
    registry: str | None = None,
    *,
    by: str | None = None,
    expected=_ANY,
    force: bool = False,
    note: str | None = None,
) -> dict:
    """Make a finished run the production run; returns the new production.json content.

    Refuses (PromotionError) a run whose evaluation did not bless it unless
    `force`, and (FeatureContractError, UnreadableModelError) one this code
    cannot serve. With `expected` (a run name or None), ProductionChangedError
    when the production run is no longer that one (another promotion won).
    Promoting the production run again changes nothing.
    """
    root = registry_root(registry)
    run_dir = run_path(name, root)
    check_run_model(run_dir)
    try:
        metrics = read_json(storage.join(run_dir, METRICS_FILE))
    except (OSError, ValueError, UnicodeDecodeError):
        metrics = {}
    metrics = metrics if isinstance(metrics, dict) else {}
    if metrics.get("blessed") is False and not force:
        reasons = "; ".join(metrics.get("reasons") or []) or "no reason recorded"
        raise PromotionError(f"run {name} was not blessed ({reasons}): pass --force to promote it anyway")

    def change(current: dict | None) -> dict:
        previous = current["run"] if current else None
        if expected is not _ANY and previous != expected:
            raise ProductionChangedError(
                f"the production run changed to {previous} while run {name} was evaluated against {expected}: "
                f"not promoted; compare them and `{PROMOTE_HINT}` by hand"
            )
        if previous == name:
            return current
        at = _now()
        entry = {
            "action": "promote",
            "run": name,
            "replaced": previous,
            "at": at,
            "by": by or who(),
            "val_mae": _finite(metrics.get("val_mae")),
            "blessed": metrics.get("blessed"),
            **({"note": note} if note else {}),
        }
        history = [*(current or {}).get("history", []), entry]
        return {"run": name, "since": at, "val_mae": entry["val_mae"], "history": history}

    return _update_production(root, change)


def production_stack(history: list[dict]) -> list[str]:
    """The production runs in force, oldest first, from the history (a rollback pops the last)."""
    stack: list[str] = []
    for entry in history:
        if entry.get("action") == "rollback" and stack:
            stack.pop()
            if not stack or stack[-1] != entry.get("run"):
                stack.append(entry.get("run"))
        elif entry.get("run"):
            stack.append(entry["run"])
    return stack


def rollback(registry: str | None = None, *, by: str | None = None) -> dict:
    """Give production back to the run the current one replaced; returns the new production.json content.

    PromotionError when no earlier production run exists or it is no longer a
    finished, servable run.
    """
    root = registry_root(registry)

    def change(current: dict | None) -> dict:
        if current is None:
            raise PromotionError(f"nothing to roll back in {root}: no run was ever promoted")
        stack = production_stack(current["history"])
        if len(stack) < 2:
            raise PromotionError(f"nothing to roll back to: {current['run']} is the first production run of {root}")
        target = stack[-2]
        try:
            target_dir = run_path(target, root)
            check_run_model(target_dir)
            metrics = read_json(storage.join(target_dir, METRICS_FILE))
        except NoModelError as error:
            raise PromotionError(f"cannot roll back to run {target}: {error}") from None
        except (OSError, ValueError, UnicodeDecodeError):
            metrics = {}
        at = _now()
        entry = {
            "action": "rollback",
            "run": target,
            "replaced": current["run"],
            "at": at,
            "by": by or who(),
            "val_mae": _finite(metrics.get("val_mae") if isinstance(metrics, dict) else None),
        }
        return {"run": target, "since": at, "val_mae": entry["val_mae"], "history": [*current["history"], entry]}

    return _update_production(root, change)


# --- one trainer per run -------------------------------------------------------------------------


def lock_run(run_dir: str):
    """Take the run folder's lock (the output folders' OutputLock); RunBusyError when a live trainer holds it.

    The caller releases it (`.release()`) when done. A dead trainer's lock is taken over
    (local: the kernel drops a dead process's flock).
    """
    from taxifare_core.storage.outputs import LOCK_FILE, OutputLock, OutputLockedError

    try:
        return OutputLock(run_dir).acquire()
    except OutputLockedError:
        holder = ""
        try:
            info = json.loads(storage.read_text(storage.join(run_dir, LOCK_FILE)))
            holder = f" (pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')})"
        except (OSError, ValueError, AttributeError):
            pass
        dead = f"; if it is dead, delete {storage.join(run_dir, LOCK_FILE)}" if storage.is_remote(run_dir) else ""
        raise RunBusyError(
            f"run {run_name(run_dir)} is being trained by another process{holder}: wait for it to finish{dead}"
        ) from None
