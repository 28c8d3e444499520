"""Empty the local data and training-output folders, keeping their structure.

    python -m pipelines.reset_local_files      # or: make reset_local_files

The layout is the origin course's: data/{raw,processed} and
training_outputs/{metrics,models,params}, under $LOCAL_DATA_PATH and
$LOCAL_REGISTRY_PATH (default ~/.lewagon/mlops/...).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from taxifare_core.contract import local_data_path, local_registry_path

DATA_SUBFOLDERS = ("raw", "processed")
REGISTRY_SUBFOLDERS = ("metrics", "models", "params")


def reset(root: Path, subfolders: tuple[str, ...]) -> int:
    """Delete everything under `root`, then recreate its subfolders; returns entries removed."""
    removed = 0
    if root.exists():
        for entry in root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed += 1
    for name in subfolders:
        (root / name).mkdir(parents=True, exist_ok=True)
    return removed


def main() -> int:
    """Reset both folders and say what was done."""
    for root, subfolders in ((local_data_path(), DATA_SUBFOLDERS), (local_registry_path(), REGISTRY_SUBFOLDERS)):
        try:
            removed = reset(root, subfolders)
        except OSError as error:
            print(f"error: cannot reset {root}: {error.strerror}", file=sys.stderr)
            return 2
        print(f"reset {root} ({removed} entries removed; kept {', '.join(subfolders)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
