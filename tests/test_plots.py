"""The training curve: epochs laid end to end across chunks, the kept epoch of each chunk, a real PNG."""

from __future__ import annotations

from taxifare_core.training.plots import epoch_series, training_curve_png

HISTORY = [
    {
        "chunk": 1,
        "train_mae": 3.0,
        "val_mae": 2.5,
        "best_epoch": 2,
        "epoch_train_mae": [5.0, 3.0, 2.8],
        "epoch_val_mae": [4.0, 2.5, 2.6],
    },
    {
        "chunk": 2,
        "train_mae": 2.6,
        "val_mae": 2.45,
        "best_epoch": 2,  # lowest val loss, not lowest val MAE
        "epoch_train_mae": [2.7, 2.6],
        "epoch_val_mae": [2.4, 2.45],
    },
]


def test_epochs_run_across_chunks_and_each_chunk_marks_its_best():
    train, val, starts, kept = epoch_series(HISTORY)
    assert train == [5.0, 3.0, 2.8, 2.7, 2.6] and val == [4.0, 2.5, 2.6, 2.4, 2.45]
    assert starts == [1, 4] and kept == [2, 5]


def test_a_history_without_epochs_is_one_epoch_per_chunk():
    train, val, starts, kept = epoch_series(
        [{"chunk": 1, "train_mae": 3.0, "val_mae": 2.5}, {"chunk": 2, "train_mae": 2.9, "val_mae": 2.4}]
    )
    assert train == [3.0, 2.9] and val == [2.5, 2.4] and starts == kept == [1, 2]


def test_png_for_one_or_many_chunks():
    for history in (HISTORY[:1], HISTORY):
        png = training_curve_png(history, baseline_mae=3.1, title="run x")
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
