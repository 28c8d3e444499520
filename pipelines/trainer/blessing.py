"""Blessing: is a newly trained model good enough to replace the production one?

At the end of a run the trainer scores, on the same validation rows, the new
model, the linear baseline and the registry's production model (if any), then
`decide` blesses the new model when

- its val MAE beats the baseline's by at least `min_gain` (a fraction: 0.01 = 1 %), and
- it is no worse than the production model's on the same rows, within
  `max_regression` (a fraction: 0 = no worse at all).

A production model that cannot be scored (another feature contract, an
unreadable model.keras, non-finite answers) does not block the new one: the
reasons say it was compared to the baseline only. Only blessed runs are
promoted by the trainer (taxifare_core.training.registry.promote).

    >>> decide(2.40, 2.57, 0.01, production_mae=2.45, production_run="20261126T091500.123456Z")["blessed"]
    True
"""

from __future__ import annotations

import math

DEFAULT_MIN_GAIN = 0.01
DEFAULT_MAX_REGRESSION = 0.0


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def decide(
    val_mae: float,
    baseline_mae: float,
    min_gain: float,
    *,
    production_mae: float | None = None,
    production_run: str | None = None,
    max_regression: float = DEFAULT_MAX_REGRESSION,
    production_problem: str | None = None,
    rows: int | None = None,
) -> dict:
    """{"blessed", "reasons", "compared_to", "production_mae_same_rows"} for metrics.json.

    `production_problem` says why the production run (`production_run`) could not
    be scored; `rows` is the number of validation rows, for the reasons' wording.
    Every reason is listed, the passing ones too, so a person sees the whole decision.
    """
    on_rows = f" on the same {rows:,} rows" if rows is not None else " on the same rows"
    reasons, blessed = [], True
    gain = (baseline_mae - val_mae) / baseline_mae if baseline_mae > 0 else -math.inf
    if math.isfinite(gain) and gain >= min_gain:
        reasons.append(
            f"val MAE ${val_mae:.3f} beats the baseline's ${baseline_mae:.3f} by {_percent(gain)} "
            f"(needs {_percent(min_gain)})"
        )
    else:
        blessed = False
        how = (
            f"is {_percent(abs(gain))} {'better' if gain >= 0 else 'worse'} than"
            if math.isfinite(gain)
            else "cannot be compared with"
        )
        reasons.append(
            f"val MAE ${val_mae:.3f} {how} the baseline's ${baseline_mae:.3f} (needs {_percent(min_gain)} better)"
        )
    if production_run is None:
        reasons.append("no production model yet")
    elif production_mae is None:
        reasons.append(
            f"production run {production_run} cannot be scored ({production_problem}): compared to the baseline only"
        )
    else:
        limit = production_mae * (1 + max_regression)
        allowed = f" (allowed {_percent(max_regression)} worse)" if max_regression else ""
        if val_mae <= limit:
            reasons.append(
                f"val MAE ${val_mae:.3f} is no worse than production run {production_run}'s "
                f"${production_mae:.3f}{on_rows}{allowed}"
            )
        else:
            blessed = False
            reasons.append(
                f"val MAE ${val_mae:.3f} is worse than production run {production_run}'s "
                f"${production_mae:.3f}{on_rows}{allowed}"
            )
    return {
        "blessed": blessed,
        "reasons": reasons,
        "compared_to": production_run,
        "production_mae_same_rows": production_mae,
    }
