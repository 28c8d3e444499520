"""The trainer's checkpoints and the fingerprint of its input shards.

Checkpoint files carry their chunk number; state.json, written last by atomic rename,
names the ones it goes with, so a kill during a checkpoint write leaves the previous one
whole. The state records the shards' sizes and versions, and `--resume` refuses shards
that changed (`check_inputs`).
"""

from __future__ import annotations

import os
import tempfile

from pipelines.cli import (
    UsageError,
)
from taxifare_core import storage
from taxifare_core.training import registry

# Checkpoint files carry their chunk number; state.json, written last, names the
# ones it goes with, so a kill during a checkpoint write leaves the previous one whole.
CHECKPOINT_MODEL = "model-{chunk:06d}.keras"


CHECKPOINT_BEST_WEIGHTS = "best-{chunk:06d}.weights.h5"


def input_fingerprint(train_paths: list[str], val_paths: list[str]) -> dict:
    """{"train"|"val": {path: {"size", "version"}}}: what the run reads, as found at its start."""
    return {
        kind: {path: storage.version(path) for path in paths}
        for kind, paths in (("train", train_paths), ("val", val_paths))
    }


def fingerprint_changes(before: dict, after: dict) -> list[str]:
    """What differs between two input fingerprints, one phrase per shard (empty when nothing does)."""
    changes = []
    for kind in ("train", "val"):
        old, new = before.get(kind, {}), after.get(kind, {})
        for path in sorted(old.keys() | new.keys()):
            if path not in new:
                changes.append(f"{path} is gone")
            elif path not in old:
                changes.append(f"{path} is new")
            elif old[path]["size"] != new[path]["size"]:
                changes.append(f"{path} changed size ({old[path]['size']:,} -> {new[path]['size']:,} bytes)")
            elif old[path] != new[path]:
                changes.append(f"{path} was rewritten")
    return changes


def check_inputs(recorded: dict, current: dict, since: str) -> None:
    """UsageError naming the first differences when the shards are not the ones the run started on."""
    changes = fingerprint_changes(recorded, current)
    if changes:
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        raise UsageError(f"the shards changed {since}: {'; '.join(changes[:3])}{more}; start a new run")


def checkpoint_path(run_dir: str, name: str) -> str:
    """Path of a file in the run's checkpoint folder."""
    return storage.join(run_dir, registry.CHECKPOINT_DIR, name)


def save_weights(model, path: str) -> None:
    """Save weights to a local or remote .weights.h5 path (written whole: temp file + rename)."""
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "best.weights.h5")
        model.save_weights(local)
        storage.copy_file(local, path)


def load_weights(model, path: str) -> None:
    """Load weights from a local or remote .weights.h5 path."""
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "best.weights.h5")
        storage.copy_file(path, local)
        model.load_weights(local)


def write_checkpoint(run_dir: str, model, state: dict, best_weights) -> None:
    """Model (with optimizer state), the best chunk's weights when they differ from it, then the state.

    Each file is new (its name carries the chunk) and written whole; state.json,
    replaced atomically last, is the commit: a kill at any moment leaves either
    the previous checkpoint or this one, never a mix. Files the new state does
    not name (the previous chunk's, a killed write's leftovers) are removed after.
    The best weights are written only once a later chunk did worse, so a run that
    keeps improving pays one model save per chunk.
    """
    folder = storage.join(run_dir, registry.CHECKPOINT_DIR)
    storage.makedirs(folder)
    state["checkpoint_model"] = CHECKPOINT_MODEL.format(chunk=state["chunks_done"])
    registry.save_keras_model(model, storage.join(folder, state["checkpoint_model"]))
    if state["best_chunk"] == state["chunks_done"]:
        state["best_weights_file"] = state["best_weights_chunk"] = None
    elif state["best_weights_chunk"] != state["best_chunk"]:
        current = model.get_weights()
        model.set_weights(best_weights)
        state["best_weights_file"] = CHECKPOINT_BEST_WEIGHTS.format(chunk=state["best_chunk"])
        save_weights(model, storage.join(folder, state["best_weights_file"]))
        model.set_weights(current)
        state["best_weights_chunk"] = state["best_chunk"]
    registry.write_json(storage.join(folder, registry.CHECKPOINT_STATE_FILE), state)
    _remove_unnamed_checkpoint_files(folder, state)


def _remove_unnamed_checkpoint_files(folder: str, state: dict) -> None:
    """Delete checkpoint files the state does not name: superseded ones, leftovers of a killed write."""
    keep = {registry.CHECKPOINT_STATE_FILE, state["checkpoint_model"], state.get("best_weights_file")}
    for name in storage.listdir(folder):
        if name not in keep:
            storage.remove_file(storage.join(folder, name))
