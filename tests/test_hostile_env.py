"""The hostile-environment table's quick version: real processes, real signals, a real server on loopback.

One run of `scripts/hostile_env.py --quick` (module fixture); the HTTP rows and the
job rows are judged apart, so a failure names its part.
"""

from __future__ import annotations

import pytest

from process_helpers import run_script

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def table() -> dict:
    """The quick run's table rows (case -> (expected, observed, ok)), its totals line and exit code."""
    done = run_script("hostile_env.py", "--quick", "--seed", "1", timeout=1800)
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] not in ("case", "---"):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    totals = next((line for line in done.stdout.splitlines() if line.startswith("totals:")), "")
    assert totals, done.stdout[-3000:] + done.stderr[-3000:]
    return {"rows": rows, "totals": totals, "code": done.returncode, "stdout": done.stdout}


def test_every_group_has_its_rows(table):
    cases = table["rows"]
    for group in ("http", "signals", "fsize", "readonly", "foreign", "bigquery"):
        assert any(case.startswith(group + ":") for case in cases), (group, list(cases))


def test_the_http_service_survives_the_hostile_client(table):
    http = {case: row for case, row in table["rows"].items() if case.startswith("http:")}
    assert len(http) == 6
    assert all(ok == "yes" for _, _, ok in http.values()), http


def test_the_jobs_lose_nothing_hang_never_and_print_no_traceback(table):
    """Every row (signals, full disk, read-only, foreign folders, a dying BigQuery) and zero totals."""
    failed = {case: row for case, row in table["rows"].items() if row[2] == "NO"}
    assert not failed, failed
    assert "files lost that the tool did not write: 0; hangs past the deadline: 0; tracebacks: 0" in table["totals"]
    assert table["code"] == 0, table["stdout"][-3000:]


def test_help_names_the_groups():
    done = run_script("hostile_env.py", "--help", timeout=120)
    assert done.returncode == 0 and "--quick" in done.stdout and "--cases" in done.stdout
