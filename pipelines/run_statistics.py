"""A preprocessing run's statistics on the driver: drift against a reference, stats.json and report.html, the verdict.

    reference = resolve_reference("/data/processed/previous")   # --compare_to: an output folder, a run folder
                                                                  # or a stats.json (local or gs://)
    drift = publish_statistics(run_dir, summary, compare_to)    # after the pipeline: RUN_DIR/stats.json, report.html
    print_drift(drift)                                           # the lines under the summary table

The pipeline computes the statistics (`pipelines.preprocessing.statistics`) and writes
them as one JSON line; this module reads that line back, scores drift
(`taxifare_core.drift`: against the reference's kept rows, else val against train) and
writes the files. `python -m pipelines.preprocess` and `python -m pipelines.report` use it.
"""

from __future__ import annotations

import json
import sys

from pipelines.preprocessing.statistics import SPLITS, STATS_PARTS, splits_json
from taxifare_core import stats, storage
from taxifare_core.drift import EXPECTED_VAL_DRIFT, drift_report
from taxifare_core.report import render_report
from taxifare_core.stats_file import STATS_FILE, StatsError, parse_stats
from taxifare_core.storage import outputs

REPORT_FILE = "report.html"
# Exit code of a run stopped by --fail_on_drift (after writing everything).
EXIT_DRIFT = 3


def resolve_reference(location: str) -> tuple[str, dict]:
    """--compare_to: an output folder, a run folder or a stats.json (local or gs://) -> (path, stats).

    A stats.json that exists is read as given; an output folder's is found in its
    published run folder. StatsError (one line) when it is missing or not a statistics file.
    """
    location = location.rstrip("/")
    named = location if location.endswith(".json") else storage.join(location, STATS_FILE)
    try:
        path = named if storage.isfile(named) else outputs.published_path(named)
        found = storage.isfile(path)
        text = storage.read_text(path) if found else None
    except Exception as error:  # noqa: BLE001 - a file system's own error, reported in one line
        raise StatsError(f"--compare_to {location}: {str(error).splitlines()[0]}") from None
    if not found:
        where = "" if path == location else f" (looked for {path})"
        raise StatsError(f"--compare_to {location}: no statistics file found{where}")
    return path, parse_stats(text, f"--compare_to {path}")


def run_drift(splits: dict, reference: tuple[str, dict] | None) -> dict:
    """Drift of a run: against a reference run (all kept rows of each), else val against train."""
    if reference is not None:
        path, payload = reference
        current = stats.combine_splits([splits[name] for name in SPLITS if name in splits])
        baseline = stats.combine_splits(list(payload["splits"].values()))
        return drift_report(current, baseline, path, "this run (train + val)")
    return drift_report(
        splits["val"], splits["train"], "train (this run)", "val (this run)", expected=EXPECTED_VAL_DRIFT
    )


def publish_statistics(output: str, summary: dict, compare_to: str | None = None) -> dict | None:
    """Read the pipeline's statistics, add drift, write OUTPUT/stats.json and OUTPUT/report.html.

    Returns the drift record.
    """
    parts = storage.join(output, STATS_PARTS)
    found = storage.isfile(parts)
    payload = json.loads(storage.read_text(parts) if found else splits_json({}))  # no file: no row was kept
    reference = resolve_reference(compare_to) if compare_to else None
    payload["drift"] = run_drift(payload["splits"], reference)
    storage.write_text(storage.join(output, STATS_FILE), json.dumps(payload, indent=1) + "\n")
    storage.write_text(
        storage.join(output, REPORT_FILE), render_report(summary, payload, reference[1] if reference else None)
    )
    if found:
        storage.remove_file(parts)
    return payload["drift"]


def drift_lines(drift: dict | None) -> list[str]:
    """The drift verdict as printed under the summary table."""
    if not drift:
        return []
    scores = drift["scores"]
    lines = [f"drift ({drift['current']} vs {drift['reference']}, PSI > {drift['threshold']} flagged):"]
    if drift["flagged"]:
        lines += [f"  FLAGGED {name}: PSI {scores[name]:.3f}" for name in drift["flagged"]]
    else:
        lines.append("  nothing flagged")
    lines += [
        f"  expected (chronological split) {name}: PSI {scores[name]:.3f}"
        for name in drift["expected"]
        if scores.get(name) is not None
    ]
    return lines


def print_drift(drift: dict | None, file=sys.stdout) -> None:
    """Print drift_lines."""
    for line in drift_lines(drift):
        print(line, file=file)
