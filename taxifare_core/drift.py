"""Drift between two runs' feature statistics: the population stability index (PSI) per feature.

Pure numpy, over the finalized splits of `taxifare_core.stats` (as stats.json holds them):

    report = drift_report(current_split, reference_split, "runs/2026-11/stats.json")
    report["flagged"]        # features whose PSI is above PSI_THRESHOLD

Numeric columns are scored over their fixed bins grouped into the reference's deciles,
one-hot groups (weekday, month, districts) as one categorical feature each.
"""

from __future__ import annotations

import numpy as np

from taxifare_core import contract
from taxifare_core.stats import ONE_HOT_COLUMNS
from taxifare_core.stats_file import StatsError

# One-hot groups scored as one categorical feature each; districts have a "none of the 20" category.
NONE_CATEGORY = "none"
GROUPS = {
    "weekday": (contract.COLS_WEEKDAY, False),
    "month": (contract.COLS_MONTH, False),
    "pickup_district": (contract.COLS_PICKUP_DISTRICT, True),
    "dropoff_district": (contract.COLS_DROPOFF_DISTRICT, True),
}
# Population stability index: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted (flagged).
PSI_THRESHOLD = 0.2
# Share given to an empty bin so the index stays finite.
PSI_FLOOR = 1e-4
# A numeric column is scored over about this many bins of the reference's rows (its deciles, cut at the
# fixed edges): the fine histogram bins would make PSI of a small sample mostly noise.
PSI_BINS = 10
# Val is the latest month(s) of a chronological split: these always differ from train.
EXPECTED_VAL_DRIFT = ("days_since_2009_scaled", "month")


def psi(reference_counts, current_counts, floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of two count vectors over the same bins; None if either is empty.

    PSI = sum over bins of (current share - reference share) * ln(current share / reference share),
    each share at least `floor` so an empty bin keeps the index finite.
    """
    reference = np.asarray(reference_counts, dtype=np.float64)
    current = np.asarray(current_counts, dtype=np.float64)
    if reference.shape != current.shape:
        raise ValueError(f"bins differ: {reference.shape} vs {current.shape}")
    if reference.sum() <= 0 or current.sum() <= 0:
        return None
    expected = np.maximum(reference / reference.sum(), floor)
    actual = np.maximum(current / current.sum(), floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reference_bins(reference_counts, bins: int = PSI_BINS) -> np.ndarray:
    """Cut points grouping consecutive fixed bins into ~`bins` groups of ~equal reference share (its deciles).

    Returns the fixed-bin index where each group starts (first is 0); empty for an empty reference.
    """
    counts = np.asarray(reference_counts, dtype=np.float64)
    if counts.sum() <= 0:
        return np.zeros(1, dtype=np.intp)
    cumulative = np.cumsum(counts) / counts.sum()
    # A group ends at the first fixed bin where the cumulative share reaches k / bins.
    ends = np.searchsorted(cumulative, np.arange(1, bins) / bins - 1e-12) + 1
    starts = np.unique(np.concatenate([[0], ends[ends < len(counts)]]))
    return starts.astype(np.intp)


def grouped_counts(counts, starts: np.ndarray) -> np.ndarray:
    """Fixed-bin counts summed per group of reference_bins."""
    return np.add.reduceat(np.asarray(counts, dtype=np.float64), starts)


def _columns_by_name(split: dict) -> dict:
    return {column["name"]: column for column in split["columns"]}


def group_counts(split: dict, group: str) -> tuple[list[str], list[int]]:
    """(categories, rides per category) of a one-hot group: each column's ones, "none" for districts."""
    columns = _columns_by_name(split)
    positions, with_none = GROUPS[group]
    names = contract.PROCESSED_COLUMNS[positions]
    ones = [int(columns[name]["histogram"]["counts"][1]) for name in names]
    labels = [name.split("_", 1)[1] for name in names]
    if with_none:
        labels.append(NONE_CATEGORY)
        ones.append(int(split["rows"]) - sum(ones))
    return labels, ones


def drift_features(split: dict) -> list[str]:
    """Names scored for drift: each column that is not one-hot, then each one-hot group, as present."""
    names = [c["name"] for c in split["columns"]]
    groups = [
        g for g, (positions, _) in GROUPS.items() if all(n in names for n in contract.PROCESSED_COLUMNS[positions])
    ]
    return [n for n in names if n not in ONE_HOT_COLUMNS] + groups


def drift_scores(current: dict, reference: dict) -> dict[str, float | None]:
    """PSI of each drift feature present in both splits, over the reference's bins.

    A numeric column over its fixed bins grouped into the reference's deciles
    (`reference_bins`); a one-hot group over its categories.
    """
    current_columns, reference_columns = _columns_by_name(current), _columns_by_name(reference)
    scores = {}
    for name in drift_features(current):
        if name in GROUPS:
            if name not in drift_features(reference):
                continue
            scores[name] = psi(group_counts(reference, name)[1], group_counts(current, name)[1])
            continue
        if name not in reference_columns:
            continue
        ref_hist, cur_hist = reference_columns[name]["histogram"], current_columns[name]["histogram"]
        if not np.allclose(ref_hist["edges"], cur_hist["edges"]):
            raise StatsError(
                f"the histogram edges of {name} differ from the reference's: "
                "statistics of another version, not comparable"
            )
        starts = reference_bins(ref_hist["counts"])
        scores[name] = psi(grouped_counts(ref_hist["counts"], starts), grouped_counts(cur_hist["counts"], starts))
    return {name: (None if score is None else round(score, 6)) for name, score in scores.items()}


def drift_report(
    current: dict,
    reference: dict,
    reference_label: str,
    current_label: str = "this run",
    expected: tuple[str, ...] = (),
) -> dict:
    """Scores, the features above PSI_THRESHOLD ("flagged") and those that drift by construction ("expected")."""
    scores = drift_scores(current, reference)
    above = [name for name, score in scores.items() if score is not None and score > PSI_THRESHOLD]
    return {
        "reference": reference_label,
        "current": current_label,
        "method": (
            f"population stability index over the reference's bins (numeric columns: ~{PSI_BINS} "
            f"bins of equal reference share; share floor {PSI_FLOOR})"
        ),
        "threshold": PSI_THRESHOLD,
        "scores": scores,
        "flagged": [name for name in above if name not in expected],
        "expected": [name for name in expected if name in scores],
    }


def drift_level(score: float | None) -> str:
    """The rule of thumb's word for a PSI."""
    if score is None:
        return "n/a"
    return "stable" if score < 0.1 else ("moderate" if score <= PSI_THRESHOLD else "shifted")
