"""A tiny-N smoke run of scripts/bench_preprocess.py: its equality check across the three approaches (no timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_preprocess.py"


def _bench_module():
    """scripts/bench_preprocess.py imported as a module."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_preprocess
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return bench_preprocess


def test_three_approaches_write_the_same_processed_rows(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "1500", "--no-timing", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    verdicts = [line for line in done.stdout.splitlines() if line.startswith("same processed rows")]
    assert len(verdicts) == 2 and all(": yes (" in line for line in verdicts), done.stdout
    assert "| approach |" not in done.stdout


def test_a_differing_approach_is_caught():
    bench = _bench_module()
    a = np.zeros((3, 66), np.float32)
    assert bench.same_rows(a, a.copy())[0]
    b = a.copy()
    b[1, 23] = 0.01
    assert not bench.same_rows(a, b)[0]
    assert not bench.same_rows(a, a[:2])[0]


def test_two_empty_outputs_are_not_the_same_rows():
    """No rows written by both approaches proves nothing: refused, as bench_bigquery.py refuses it."""
    bench = _bench_module()
    empty = bench.load_sorted([])
    same, how = bench.same_rows(empty, empty)
    assert not same and "no rows" in how
