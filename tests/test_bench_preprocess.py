"""A tiny-N smoke run of scripts/bench_preprocess.py: its equality check across the three approaches (no timing)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_preprocess.py"


def test_three_approaches_write_the_same_processed_rows(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "1500", "--no-timing", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    verdicts = [line for line in done.stdout.splitlines() if line.startswith("same processed rows")]
    assert len(verdicts) == 2 and all(": yes (" in line for line in verdicts), done.stdout
    assert "| approach |" not in done.stdout


def test_a_differing_approach_is_caught():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_preprocess as bench
    finally:
        sys.path.remove(str(SCRIPT.parent))
    rows = bench.load_sorted([])
    assert bench.same_rows(rows, rows)[0]
    a = np.zeros((3, 66), np.float32)
    b = a.copy()
    b[1, 23] = 0.01
    assert not bench.same_rows(a, b)[0]
    assert not bench.same_rows(a, a[:2])[0]
