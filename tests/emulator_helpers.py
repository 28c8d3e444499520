"""The emulator tooling (scripts/emulators/) for tests, and its venv or a skip saying why.

from emulator_helpers import ensure_emulator_venv
from emulators import bigquery as bigquery_emulator   # importable once this module is
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# scripts/ is not a package: its emulators/ folder is imported as the scripts themselves do
# (and they import scripts/jobs.py from the checkout's root).
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

from emulators import gcs, processes, python_env  # noqa: E402


def ensure_emulator_venv() -> None:
    """Build the emulators' venv (.venv-bqemu) if needed; skip the test when impossible, fail on CI."""
    try:
        python_env.ensure_venv(log=lambda line: print(line, file=sys.stderr))
    except processes.EmulatorError as error:
        message = f"emulator unavailable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def running_gcs_emulator(folder, bucket: str):
    """gs://bucket on a running GCS emulator, STORAGE_EMULATOR_HOST set while inside; stopped by its PID after."""
    ensure_emulator_venv()
    server = gcs.start_storage(folder, bucket, log=lambda line: None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://{server.host_port}")
        try:
            yield f"gs://{bucket}"
        finally:
            processes.stop(server.pid)
