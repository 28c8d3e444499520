"""A tiny run of scripts/bench_bad_input.py: every spoiled line is counted as bad input by the real pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_bad_input.py"


def test_every_spoiled_line_is_counted_as_bad_input(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--rows",
            "3000",
            "--bad_every",
            "100",
            "--repeats",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "bad input counted: 30 of 30 spoiled lines (all)" in done.stdout, done.stdout
    assert "10 truncated line, 10 a field too many, 10 text in a number" in done.stdout
