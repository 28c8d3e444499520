"""pipelines.run_statistics: the reference a person names with --compare_to, and the verdict lines."""

from __future__ import annotations

import json

import pytest

from pipelines.run_statistics import drift_lines, resolve_reference
from taxifare_core import stats
from taxifare_core.stats_file import STATS_FILE, StatsError
from taxifare_core.storage import outputs


@pytest.fixture
def published_output(tmp_path):
    """An output folder as a finished run leaves it: OUTPUT/summary.json publishing OUTPUT/run-<id>/stats.json."""
    output = tmp_path / "out"
    run_name = outputs.new_run_name()
    (output / run_name).mkdir(parents=True)
    payload = {"splits": {"train": stats.empty_split(), "val": stats.empty_split()}}
    (output / run_name / STATS_FILE).write_text(json.dumps(payload))
    outputs.publish(str(output), run_name, {"rows_read": 0})
    return output, output / run_name


def test_compare_to_takes_the_output_folder_the_run_folder_or_the_stats_file_ls_shows(published_output):
    output, run_dir = published_output
    expected = str(run_dir / STATS_FILE)
    # RUN_FOLDER/stats.json is what `ls` shows; the run folder's own summary.json must not get in the way.
    for location in (output, f"{output}/", run_dir, run_dir / STATS_FILE):
        path, payload = resolve_reference(str(location))
        assert path == expected, location
        assert set(payload["splits"]) == {"train", "val"}


def test_compare_to_a_missing_file_names_where_it_looked(tmp_path):
    with pytest.raises(StatsError, match=r"--compare_to .*: no statistics file found \(looked for .*stats.json\)"):
        resolve_reference(str(tmp_path))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(StatsError, match="is not a statistics file"):
        resolve_reference(str(tmp_path / "other.json"))


def test_drift_lines_say_flagged_and_expected_features():
    drift = {
        "current": "val",
        "reference": "train",
        "threshold": 0.2,
        "flagged": ["fare_amount"],
        "expected": ["month"],
        "scores": {"fare_amount": 0.5, "month": 1.25},
    }
    assert drift_lines(drift) == [
        "drift (val vs train, PSI > 0.2 flagged):",
        "  FLAGGED fare_amount: PSI 0.500",
        "  expected (chronological split) month: PSI 1.250",
    ]
    assert drift_lines(None) == []
