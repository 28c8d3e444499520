"""The emulators' own Python 3.13 virtual environment, .venv-bqemu/ (local-bigquery needs Python >= 3.12).

Made on first use from the pins in scripts/bigquery_emulator-requirements.txt (PyPI only;
DuckDB's extensions come from PyPI packages too, so it works offline). BQEMU_PYTHON names
another Python 3.13 interpreter.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from emulators.processes import EmulatorError

# The checkout holding this script (its .venv-bqemu/ beside the project's .venv/).
ROOT = Path(__file__).resolve().parents[2]


VENV_DIR = ROOT / ".venv-bqemu"


REQUIREMENTS = ROOT / "scripts" / "bigquery_emulator-requirements.txt"


# Extensions local-bigquery loads, installed into DuckDB from their PyPI packages.
DUCKDB_EXTENSIONS = ("ducklake", "spatial", "icu", "avro")


def python313_candidates() -> list[str]:
    """Where a Python 3.13 may be, in order: $BQEMU_PYTHON, python3.13 on PATH, pyenv's 3.13
    (`pyenv prefix 3.13`, then every $PYENV_ROOT/versions/3.13*, newest first)."""
    candidates = [os.environ["BQEMU_PYTHON"]] if os.environ.get("BQEMU_PYTHON") else []
    candidates.append("python3.13")
    if shutil.which("pyenv"):
        try:
            done = subprocess.run(["pyenv", "prefix", "3.13"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0:
            prefixes = [prefix for prefix in done.stdout.strip().split(":") if prefix]
            candidates += [str(Path(prefix) / "bin" / "python3.13") for prefix in prefixes]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")), reverse=True)
    return candidates


def find_python313() -> str:
    """A Python 3.13 interpreter from python313_candidates() that really runs."""
    for candidate in python313_candidates():
        found = shutil.which(candidate)
        if found and _is_python313(found):
            return found
    raise EmulatorError(
        "the BigQuery emulator needs Python 3.13 (local-bigquery requires >=3.13,<3.14) and none "
        "was found: install it (e.g. `pyenv install 3.13.0`) or set BQEMU_PYTHON"
    )


def _is_python313(executable: str) -> bool:
    """True when executable runs and is Python 3.13 (a pyenv shim may exist yet fail)."""
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "(3, 13)"


def _requirements_digest() -> str:
    """Hash of the pins: a venv made from other pins is refreshed."""
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def _run(command: list[str], what: str) -> None:
    """Run a setup command; on failure raise with the tail of its output."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise EmulatorError(f"{what} failed (exit {done.returncode}): {tail[-1] if tail else ''}\n" + "\n".join(tail))


def ensure_venv(venv_dir: Path = VENV_DIR, log=print) -> Path:
    """Create or refresh the emulator's venv when needed; return its local-bigquery executable."""
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / ".installed"
    digest = _requirements_digest()
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == digest):
        interpreter = find_python313()
        log(f"creating the BigQuery emulator's venv at {venv_dir} with {interpreter} (about 30 s)")
        if not python.exists():
            _run([interpreter, "-m", "venv", str(venv_dir)], "creating the venv")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            f"pip install -r {REQUIREMENTS.name}",
        )
        stamp.write_text(digest + "\n")
    # DuckDB keeps extensions under ~/.duckdb, which may be gone while the venv is cached.
    _run(
        [
            str(python),
            "-c",
            f"import duckdb_extensions as d\nfor name in {DUCKDB_EXTENSIONS!r}: d.import_extension(name)",
        ],
        "installing DuckDB's extensions from their PyPI packages",
    )
    return venv_dir / "bin" / "local-bigquery"
