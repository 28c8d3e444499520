"""Test data for the trainer, registry and prediction tests: processed shards and raw ride files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from taxifare_core import cleaning, features, generate, parsing

# `pytest` (not `python -m pytest`) puts only tests/ on the path; the trainer's flags are the scripts' own.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.jobs import train_flags  # noqa: E402

__all__ = ["processed_rows", "saved_tiny_model", "train_flags", "write_shards"]


def processed_rows(n_rows: int, seed: int = 7) -> np.ndarray:
    """About `n_rows` processed rows (65 features + fare) of generated clean rides."""
    raw = generate.generate_rides(int(n_rows * 1.1) + 20, seed=seed)
    typed, reasons = parsing.parse_frame(raw)
    kept = cleaning.clean(typed[reasons.isna()]).kept
    return features.processed_rows(kept)[:n_rows]


def write_shards(folder: Path, rows: np.ndarray, sizes: list[int], prefix: str = "train") -> list[Path]:
    """Split `rows` into shards of the given sizes, named like the preprocessing pipeline's."""
    assert sum(sizes) == len(rows), (sizes, len(rows))
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for index, size in enumerate(sizes):
        path = folder / f"{prefix}-{index:05d}-of-{len(sizes):05d}.csv"
        text = features.format_csv(rows[start : start + size])
        path.write_text(text + "\n" if text else "")
        paths.append(path)
        start += size
    return paths


def saved_tiny_model(
    registry_root: Path,
    n_rows: int,
    seed: int,
    model_seed: int,
    epochs: int = 1,
    metrics: dict | None = None,
    promote: bool = True,
):
    """A briefly trained contract model saved as one run of a registry: (model, run folder).

    `promote`: made the registry's production run, as a person would with
    `python -m pipelines.registry promote RUN`, so commands without --run use it.
    """
    from taxifare_core.training import registry
    from taxifare_core.training.model import build_model

    rows = processed_rows(n_rows, seed=seed)
    model = build_model(learning_rate=0.01, seed=model_seed)
    model.fit(rows[:, :-1], rows[:, -1], batch_size=32, epochs=epochs, verbose=0)
    run_dir = registry.save_run(registry.new_run(str(registry_root)), model, {}, metrics or {})
    if promote:
        registry.promote(registry.run_name(run_dir), str(registry_root), by="tests")
    return model, run_dir
