"""scripts/fuzz_inputs.py in real processes: the quick corpus here, every kind under `-m slow`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taxifare_core.cleaning import clean
from taxifare_core.parsing import parse_frame

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_inputs.py"


def _fuzz(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_quick_fuzz_no_crash_and_every_line_accounted(tmp_path):
    done = _fuzz("--quick", "--rides", "200", "--seed", "1", "--workdir", str(tmp_path), timeout=900)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "crashes 0, lines unaccounted 0, kinds failed 0, skipped 0" in last and last.endswith("PASS"), last


@pytest.mark.slow
def test_full_fuzz_every_kind(tmp_path, generated_rides_raw):
    """Every kind, on 1,000 generated rides that pass cleaning: a mutated dirty ride (zero coordinates, say)
    goes to batch prediction's dead letter, which the fuzzer's "row" expectation does not foresee."""
    typed, _ = parse_frame(generated_rides_raw)
    sample = tmp_path / "clean_rides.csv"
    generated_rides_raw.loc[clean(typed).kept.index].to_csv(sample, index=False)
    done = _fuzz("--sample", str(sample), "--rides", "1000", "--workdir", str(tmp_path / "work"), timeout=3000)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "crashes 0, lines unaccounted 0" in done.stdout.strip().splitlines()[-1]


def test_help_describes_every_flag():
    done = _fuzz("--help", timeout=120)
    assert done.returncode == 0
    for flag in ("--seed", "--rides", "--copies", "--sample", "--quick", "--separate", "--time_limit", "--workdir"):
        assert flag in done.stdout
