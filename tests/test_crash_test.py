"""The crash test's quick version: real processes SIGKILLed at seeded random moments, nothing lost or mixed."""

from __future__ import annotations

import pytest

from process_helpers import run_script

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_quick_crash_test_loses_and_mixes_nothing():
    done = run_script("crash_test.py", "--kills", "6", "--rows", "1200", "--seed", "1", timeout=900)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert summary.startswith("summary: 6 kills, 6 survived, 0 outputs lost or mixed"), summary
    assert "litter left after a clean re-run: 0" in summary
    # Every kill is aimed at the write/publish window, and the test checks it landed there.
    assert "6 kills in the write/publish window" in summary, summary


def test_help_names_the_invariant():
    done = run_script("crash_test.py", "--help", timeout=60)
    assert done.returncode == 0 and "--kills" in done.stdout and "--seed" in done.stdout
