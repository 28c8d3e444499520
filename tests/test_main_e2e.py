"""`make run` (python -m pipelines.main) end to end in a real process, on its embedded default data.

The job takes no flags: it runs at its real size (100,000 generated rides), in temporary
LOCAL_DATA_PATH / LOCAL_REGISTRY_PATH folders. Checked: exit 0, the closing summary's lines,
that its counts add up, and that every path it prints exists.

    .venv/bin/python -m pytest tests/test_main_e2e.py
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import main as main_job

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_LABELS = (
    "rides read",
    "train / val rows",
    "model val MAE",
    "example ride fare",
    "raw rides",
    "processed shards",
    "data report",
    "model and its curve",
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.e2e
@pytest.mark.slow
def test_make_run_tells_the_whole_story_and_writes_what_it_says(isolated_local_paths):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # LOCAL_* already point at the test's folders
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.main"], capture_output=True, text=True, timeout=1200, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for step in ("1/4 sample", "2/4 preprocess", "3/4 train", "4/4 predict"):
        assert f"=== {step}" in done.stdout
    summary = done.stdout.split("=== summary ===", 1)[1].strip().splitlines()
    lines = {}
    for label in SUMMARY_LABELS:
        [line] = [line for line in summary if line.startswith(label)]
        lines[label] = line[len(label) :].strip()

    read = re.fullmatch(
        r"([\d,]+) \(([\d,]+) bad input, ([\d,]+) dropped by the date window and cleaning rules, "
        r"([\d,]+) duplicates\)",
        lines["rides read"],
    )
    split = re.match(r"([\d,]+) / ([\d,]+) \(preprocessed in [\d.]+ s, dedupe batch\)", lines["train / val rows"])
    assert read and split, summary
    rows_read, bad, dropped, duplicates = map(_number, read.groups())
    train_rows, val_rows = map(_number, split.groups())
    assert rows_read == 100_000 and rows_read == bad + dropped + duplicates + train_rows + val_rows
    assert train_rows > 80_000 and val_rows > 0

    mae = re.fullmatch(
        r"\$([\d.]+)  vs  baseline \$([\d.]+) \(linear fare ~ manhattan distance\)", lines["model val MAE"]
    )
    fare = re.fullmatch(r"\$([\d.]+)", lines["example ride fare"])
    assert mae and fare, summary
    assert 0 < float(mae.group(1)) < 10 and 0 < float(mae.group(2)) < 10
    assert math.isfinite(float(fare.group(1))) and 2 < float(fare.group(1)) < 60

    data = Path(os.environ["LOCAL_DATA_PATH"])
    assert lines["raw rides"].startswith(str(data)) and len(glob.glob(lines["raw rides"])) >= 1
    processed = Path(lines["processed shards"])
    assert processed.is_relative_to(data)
    assert json.loads((processed / "summary.json").read_text())["train_rows"] == train_rows
    report = Path(lines["data report"])
    assert report.parent.parent == processed and report.parent.name.startswith("run-") and report.is_file()
    run = Path(lines["model and its curve"])
    assert run.parent == Path(os.environ["LOCAL_REGISTRY_PATH"])
    for name in ("model.keras", "params.json", "training_curve.png", "metrics.json"):
        assert (run / name).is_file(), name


def test_flags_are_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main_job.main(["--rows", "10"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized arguments: --rows 10" in err
