"""The run's summary: Beam counters -> OUTPUT/summary.json and a printed table.

The counts add up by construction: every row read ends in exactly one of
bad input, a dropping rule, duplicates, train or val; `balanced` says whether they did.

    summary = build_summary(counters_from_result(result), config.to_dict(), seconds, stages_from_result(result))
    write_summary(f"{config.output}/summary.json", summary); print(format_table(summary))
"""

from __future__ import annotations

import json

from apache_beam.metrics.metric import MetricsFilter

from pipelines.preprocessing.tags import (
    BAD_INPUT,
    COUNTER_NAMESPACE,
    DROP_RULES,
    ROWS_READ,
    STAGES,
    TRAIN_ROWS,
    VAL_ROWS,
)
from pipelines.preprocessing.timers import STAGE_NAMESPACE, STAGE_PREFIX
from taxifare_core import contract, storage
from taxifare_core.storage import outputs

SUMMARY_FILE = outputs.SUMMARY_FILE


class MetricsUnavailableError(RuntimeError):
    """The runner reports no metrics, so the counts summary.json holds cannot be known (one-line message)."""


def _query(result, namespace: str) -> dict:
    """The result's metrics of one namespace; MetricsUnavailableError when the runner has none."""
    try:
        return result.metrics().query(MetricsFilter().with_namespace(namespace))
    except NotImplementedError:
        # Beam's Dask runner, for one: its result raises instead of reporting zeros, and so do we.
        raise MetricsUnavailableError(
            f"the runner ({type(result).__name__}) reports no metrics, so the counts of summary.json cannot be known"
        ) from None


def counters_from_result(result) -> dict[str, int]:
    """This pipeline's counters, summed over steps, from a finished PipelineResult.

    MetricsUnavailableError when the runner reports no metrics.
    """
    query = _query(result, COUNTER_NAMESPACE)
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def stages_from_result(result) -> dict[str, dict]:
    """Each timed stage's {"seconds", "batches"}, summed over workers, from the stage distributions."""
    query = _query(result, STAGE_NAMESPACE)
    stages: dict[str, dict] = {}
    for distribution in query["distributions"]:
        name = distribution.key.metric.name
        value = distribution.committed if distribution.committed is not None else distribution.attempted
        if not name.startswith(STAGE_PREFIX) or value is None:
            continue
        stage = stages.setdefault(name[len(STAGE_PREFIX) :], {"seconds": 0.0, "batches": 0})
        stage["seconds"] += value.sum / 1e6
        stage["batches"] += value.count
    ordered = {name: stages[name] for name in STAGES if name in stages}
    return {name: {"seconds": round(v["seconds"], 3), "batches": v["batches"]} for name, v in ordered.items()}


def build_summary(counters: dict[str, int], config: dict, seconds: float, stages: dict | None = None) -> dict:
    """The summary record: counts, the rules' drops, the mode that ran, timing and the balance check.

    `stages`: each stage's time (stages_from_result); "other" is the rest of the wall
    time (reading, writing, Beam's own work), meaningful when one process ran them in turn.
    """
    dropped = {rule: counters.get(rule, 0) for rule in DROP_RULES}
    counts = {
        "rows_read": counters.get(ROWS_READ, 0),
        "bad_input": counters.get(BAD_INPUT, 0),
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "duplicates": counters.get(contract.RULE_DUPLICATE, 0),
        "train_rows": counters.get(TRAIN_ROWS, 0),
        "val_rows": counters.get(VAL_ROWS, 0),
    }
    accounted = (
        counts["bad_input"] + counts["dropped_total"] + counts["duplicates"] + counts["train_rows"] + counts["val_rows"]
    )
    return {
        **counts,
        "balanced": accounted == counts["rows_read"],
        "seconds": round(seconds, 2),
        "stages": _with_rest(stages or {}, seconds),
        "dedupe": config.get("dedupe"),
        "config": config,
    }


def _with_rest(stages: dict, seconds: float) -> dict:
    """The stages and "other": the wall time they leave (never below zero)."""
    if not stages:
        return {}
    timed = sum(stage["seconds"] for stage in stages.values())
    return {**stages, "other": {"seconds": round(max(seconds - timed, 0.0), 3), "batches": None}}


def write_summary(path: str, summary: dict) -> None:
    """Write the summary as JSON (local path or gs://, atomic)."""
    storage.write_text(path, json.dumps(summary, indent=2) + "\n")


def format_table(summary: dict) -> str:
    """The summary as an aligned text table."""
    dedupe_note = {
        "batch": "duplicates (within batches)",
        "global": "duplicates (whole input)",
        "none": "duplicates (not removed)",
    }.get(summary.get("dedupe"), "duplicates")
    rows = [("rows read", summary["rows_read"]), ("bad input (dead letter)", summary["bad_input"])]
    rows += [(f"dropped: {rule}", n) for rule, n in summary["dropped"].items()]
    rows += [
        (dedupe_note, summary["duplicates"]),
        ("train rows", summary["train_rows"]),
        ("val rows", summary["val_rows"]),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value:>12,}" for label, value in rows]
    lines.append(f"{'seconds':<{width}}  {summary['seconds']:>12,.1f}")
    stages = summary.get("stages") or {}
    if stages:
        lines.append("time per stage (s): " + ", ".join(f"{name} {s['seconds']:.2f}" for name, s in stages.items()))
    verdict = "yes" if summary["balanced"] else "NO"
    lines.append(f"read = bad + dropped + duplicates + train + val: {verdict}")
    return "\n".join(lines)
