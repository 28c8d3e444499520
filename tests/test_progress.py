"""Progress lines of the long steps: the pure line (format, rate, ETA), when it prints, and one end-to-end line."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import progress

ROOT = Path(__file__).resolve().parents[1]


def test_line_has_done_total_share_rate_rows_and_eta():
    line = progress.progress_line("preprocess", 256 << 20, 1 << 30, 10.0, unit="B", rows=2_500_000)
    assert line == ("preprocess: 256.0 MB of 1.0 GB (25%), 25.6 MB/s, 2.5 M rows (250,000 rows/s), ETA 30s"), line


def test_eta_is_what_is_left_at_the_rate_so_far():
    assert progress.rate_and_eta(300, 1200, 60) == (5.0, 180.0)
    assert progress.rate_and_eta(1200, 1200, 60) == (20.0, 0.0)
    assert progress.rate_and_eta(0, 1200, 60) == (None, None)  # no rate yet: no ETA either
    assert progress.rate_and_eta(300, None, 60) == (5.0, None)  # no total: a rate, no ETA


def test_line_without_total_says_elapsed_time():
    assert progress.progress_line("predict", 12_345, None, 75, unit="rows") == (
        "predict: 12.3 k rows, 165 rows/s, 1m15s elapsed"
    )


def test_durations_and_sizes_read_well():
    assert [progress.duration(s) for s in (9, 75, 3700)] == ["9s", "1m15s", "1h01m"]
    assert progress.human(999, "B") == "999 B" and progress.human(1536, "B") == "1.5 kB"
    assert progress.rate_text(200_000, 1_000_000, 2.0) == "100,000 rows/s, ETA 8s"


def test_prints_at_most_every_period_and_always_at_finish():
    now = [0.0]
    out = io.StringIO()
    reporter = progress.Progress("train", total=100, every=10, stream=out, clock=lambda: now[0])
    for _ in range(5):  # 5 advances within 4 s: no line yet
        now[0] += 0.8
        reporter.advance(10)
    assert out.getvalue() == ""
    now[0] = 10.5
    reporter.advance(10)  # 10.5 s since start: one line
    now[0] = 12.0
    reporter.advance(10)  # 1.5 s after it: none
    reporter.finish()
    lines = out.getvalue().splitlines()
    assert lines == [
        "train: 60 rows of 100 rows (60%), 6 rows/s, ETA 7s",
        "train: 70 rows of 100 rows (70%), 6 rows/s, ETA 5s",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_rewritten_in_place():
    out = _Terminal()
    reporter = progress.Progress("predict", total=4, every=0, stream=out)
    reporter.advance(1)
    reporter.advance(1)
    reporter.finish()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.count("\n") == 1 and text.endswith("\n")


def test_a_failed_run_gets_no_last_line_only_the_end_of_the_terminals_line():
    terminal, log = _Terminal(), io.StringIO()
    for out in (terminal, log):
        reporter = progress.Progress("predict", total=4, every=0, stream=out)
        reporter.advance(1)
        reporter.abandon()
    # The terminal's one updating line (25%, never rewritten to 100%) is ended so the error line starts fresh.
    assert terminal.getvalue().count("\r\x1b[K") == 1 and "(25%)" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n") and "100%" not in terminal.getvalue()
    assert log.getvalue().count("\n") == 1 and "(25%)" in log.getvalue()  # the line printed while it ran, no more
    silent = _Terminal()
    progress.Progress("predict", total=4, every=60, stream=silent).abandon()
    assert silent.getvalue() == ""  # nothing printed yet: nothing to end


def test_quiet_prints_nothing():
    out = io.StringIO()
    progress.set_quiet(True)
    try:
        reporter = progress.Progress("train", total=10, every=0, stream=out)
        reporter.advance(5)
        reporter.finish()
    finally:
        progress.set_quiet(False)
    assert out.getvalue() == ""


@pytest.mark.slow
@pytest.mark.e2e
def test_preprocessing_prints_a_progress_line_unless_quiet(generated_rides_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipelines.preprocess", "--input", str(generated_rides_path), "--no_statistics"]
    shown = subprocess.run(
        [*command, "--output", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    size = progress.human(generated_rides_path.stat().st_size, "B")
    # The header line is not counted: bytes of rides read, of the input's size.
    assert re.search(rf"^preprocess: [\d.]+ kB of {re.escape(size)} \(100%\)", shown.stderr, re.M), shown.stderr
    assert "rows/s" in shown.stderr
    quiet = subprocess.run(
        [*command, "--output", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, env=env, timeout=300
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "(100%)" not in quiet.stderr, quiet.stderr


def test_only_runs_whose_steps_run_in_this_process_get_a_line():
    from pipelines.runners import pipeline_options

    assert progress.runs_here(pipeline_options([]))
    assert progress.runs_here(pipeline_options(["--direct_running_mode", "multi_threading"]))
    # Worker processes cannot advance this process's line: no line claiming 0% at the end.
    assert not progress.runs_here(pipeline_options(["--direct_running_mode", "multi_processing"]))
    assert not progress.runs_here(pipeline_options(["--runner", "DataflowRunner"]))
