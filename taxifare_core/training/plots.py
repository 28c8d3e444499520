"""The training-curve PNG of a run: train and val MAE over every epoch, chunk by chunk, and the baseline.

    png = training_curve_png(metrics["history"], baseline_mae=3.4, title="run 20261126T091500.123456Z")

Epochs run along the x axis, across chunks; a dotted line starts each new
chunk and a ring marks the epoch each chunk kept (`best_epoch`: early stopping
restores the one of lowest validation loss). A history without per-epoch
values (one entry per chunk) is drawn as one epoch per chunk.
"""

from __future__ import annotations

import io


def epoch_series(history: list[dict]) -> tuple[list[float], list[float], list[int], list[int]]:
    """(train MAE per epoch, val MAE per epoch, first epoch of each chunk, kept epoch of each chunk), epochs from 1."""
    train, val, chunk_starts, kept = [], [], [], []
    for entry in history:
        chunk_train = entry.get("epoch_train_mae") or [entry["train_mae"]]
        chunk_val = entry.get("epoch_val_mae") or [entry["val_mae"]]
        chunk_starts.append(len(train) + 1)
        kept.append(len(train) + entry.get("best_epoch", len(chunk_val)))
        train += chunk_train
        val += chunk_val
    return train, val, chunk_starts, kept


def training_curve_png(history: list[dict], baseline_mae: float | None, title: str = "") -> bytes:
    """PNG bytes of train / val MAE per epoch over the whole run, with the baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train, val, chunk_starts, kept = epoch_series(history)
    epochs = list(range(1, len(train) + 1))
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    style = {"marker": "o", "markersize": 3} if len(epochs) <= 60 else {}
    axes.plot(epochs, train, label="train MAE", **style)
    axes.plot(epochs, val, label="val MAE", **style)
    axes.scatter(
        kept,
        [val[epoch - 1] for epoch in kept],
        s=80,
        facecolors="none",
        edgecolors="black",
        zorder=3,
        label="epoch kept per chunk",
    )
    for start in chunk_starts[1:]:
        axes.axvline(start - 0.5, color="grey", linestyle=":", linewidth=1)
    if baseline_mae is not None:
        axes.axhline(baseline_mae, linestyle="--", color="grey", label=f"baseline MAE {baseline_mae:.2f}")
    axes.set_xlim(0.5, max(len(epochs), 1) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    chunks = len(history)
    axes.set_xlabel(
        f"epoch ({chunks} chunk{'s' if chunks != 1 else ''}" + (", dotted lines between chunks)" if chunks > 1 else ")")
    )
    axes.set_ylabel("MAE (USD)")
    axes.set_title(title or "training curve")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
