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
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000", "--read_methods", "DIRECT_READ",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("same processed rows")]
    compared = re.search(r"yes \(([\d,]+) vs ([\d,]+) lines\)", line)
    assert compared, line
    assert compared.group(1) == compared.group(2) and int(compared.group(1).replace(",", "")) > 2000, line
    assert "| (a) read-only DIRECT_READ |" in done.stdout and "| (c) csv |" in done.stdout


def test_a_bad_read_method_is_one_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--read_methods", "FAST"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--read_methods" in done.stderr
