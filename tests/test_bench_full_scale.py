"""The full-scale benchmark, run small: every step, one table, disk figures, nothing left behind, raw rides reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_full_scale.py"


def _bench(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_run_prints_every_step_and_leaves_nothing_behind(tmp_path):
    work, results, plot = tmp_path / "work", tmp_path / "results.json", tmp_path / "memory.png"
    done = _bench(
        "--rows", "40000", "--fit_rows", "20000", "--work", str(work), "--output", str(results), "--plot", str(plot)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(results.read_text())
    steps = [row["step"] for row in found["table"]]
    assert steps == [
        "generate raw-40000-seed55",
        "generate held-back-1000-seed56",
        "preprocess (csv shards)",
        "read the train shards only (csv)",
        "train, one pass (csv shards)",
        "preprocess (parquet shards)",
        "read the train shards only (parquet)",
        "train, one pass (parquet shards)",
        "in-memory fit (reference)",
        "batch predict",
    ]
    for row in found["table"]:
        assert row["rows"] > 0 and row["seconds"] > 0 and row["peak_rss"] > 50 * 2**20, row
    assert found["table"][2]["rows"] == 40_000 and found["table"][-1]["rows"] == 1_000
    disk = found["disk"]
    assert disk["raw"] > 0 and 0 < disk["shards_parquet"] < disk["shards_csv"] / 2
    assert all("ratio_to_fit" in row for row in found["table"] if row["step"].startswith("train"))
    assert found["left_behind"] == []
    assert "| preprocess (csv shards) | 40,000 |" in done.stdout
    assert "the trainer's chunk loop from Parquet / from CSV: " in done.stdout
    # Memory over time: sampled through each step, its peak among the samples, drawn.
    for row in found["table"]:
        assert row["memory"] and max(rss for _, rss in row["memory"]) == row["peak_rss"], row["step"]
    assert "memory at 25 / 50 / 75% of each step's wall time" in done.stdout
    assert "train, one pass (parquet shards): " in done.stdout.split("memory at 25")[1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Progress lines of the long steps reached the terminal (stderr passes through).
    assert "preprocess: " in done.stderr and "(100%)" in done.stderr and "predict: " in done.stderr

    again = _bench(
        "--rows", "40000", "--work", str(work), *[f"--skip={s}" for s in ("preprocess", "read", "train", "fit")]
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"generate: reusing {work / 'raw-40000-seed55'}" in again.stdout
    assert "| batch predict | 1,000 |" in again.stdout  # the model trained by the first run
