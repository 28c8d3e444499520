"""The emulator launcher (scripts/bigquery_emulator.py) for tests, and its venv or a skip saying why."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    """scripts/bigquery_emulator.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bigquery_emulator_script", ROOT / "scripts" / "bigquery_emulator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


emulator_script = _load_script()


def ensure_emulator_venv() -> None:
    """Build the emulators' venv (.venv-bqemu) if needed; skip the test when impossible, fail on CI."""
    try:
        emulator_script.ensure_venv(log=lambda line: print(line, file=sys.stderr))
    except emulator_script.EmulatorError as error:
        message = f"emulator unavailable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
