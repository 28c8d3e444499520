"""A tiny-N run of scripts/bench_bigquery.py on the emulator: BigQuery and CSV write the same processed lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from emulator_helpers import ensure_emulator_venv

pytestmark = [pytest.mark.emulator, pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_bigquery.py"


@pytest.mark.emulator
@pytest.mark.slow
def test_bigquery_and_csv_steps_write_the_same_rows(tmp_path):
    ensure_emulator_venv()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "3000", "--read_methods", "DIRECT_READ", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("same processed rows")]
    compared = re.search(r"yes \(([\d,]+) vs ([\d,]+) lines\)", line)
    assert compared, line
    assert compared.group(1) == compared.group(2) and int(compared.group(1).replace(",", "")) > 2000, line
    [counted] = [line for line in done.stdout.splitlines() if line.startswith("rows read, read-only")]
    read = re.search(r": yes \(([\d,]+) vs ([\d,]+)\)", counted)
    assert read and read.group(1) == read.group(2) and int(read.group(1).replace(",", "")) > 2000, counted
    assert "| (a) read-only DIRECT_READ |" in done.stdout and "| (c) csv |" in done.stdout


def test_the_read_only_count_is_read_from_its_log(tmp_path):
    """The count the bench checks is the step's own printed line; a log without one gives None (a failed check)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_bigquery
    finally:
        sys.path.remove(str(SCRIPT.parent))
    log = tmp_path / "read-only.log"
    log.write_text("INFO some Beam line\nrows read: 2990\n")
    assert bench_bigquery.rows_read_by_count_step(log) == 2990
    log.write_text("INFO the pipeline printed nothing\n")
    assert bench_bigquery.rows_read_by_count_step(log) is None


def test_a_bad_read_method_is_one_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--read_methods", "FAST"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--read_methods" in done.stderr
