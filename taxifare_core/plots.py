"""The training-curve PNG of a run: train and val MAE per chunk, and the baseline's MAE.

    >>> png = training_curve_png([{"chunk": 1, "train_mae": 3.1, "val_mae": 2.9}], baseline_mae=3.4)
"""
from __future__ import annotations

import io


def training_curve_png(history: list[dict], baseline_mae: float | None, title: str = "") -> bytes:
    """PNG bytes of the per-chunk train / val MAE, with the baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    chunks = [entry["chunk"] for entry in history]
    axes.plot(chunks, [entry["train_mae"] for entry in history], marker="o", label="train MAE")
    axes.plot(chunks, [entry["val_mae"] for entry in history], marker="o", label="val MAE")
    if baseline_mae is not None:
        axes.axhline(baseline_mae, linestyle="--", color="grey", label=f"baseline MAE {baseline_mae:.2f}")
    axes.set_xlabel("chunk")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # chunks are whole numbers
    axes.set_ylabel("MAE (USD)")
    axes.set_title(title or "training curve")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
