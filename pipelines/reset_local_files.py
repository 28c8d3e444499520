"""Empty the local data and training-output folders, keeping their structure: lists what it removes, asks first.

    python -m pipelines.reset_local_files            # lists, then asks (on a terminal)
    python -m pipelines.reset_local_files --yes      # or: make reset_local_files ARGS=--yes
    python -m pipelines.reset_local_files --help

The layout is the origin course's: data/{raw,processed} and
training_outputs/{metrics,models,params}, under $LOCAL_DATA_PATH and
$LOCAL_REGISTRY_PATH (default ~/.lewagon/mlops/...). Everything in them goes: the
generated sample, every processed output and every trained model. Without --yes
and without a terminal to ask on, it refuses in one line (exit 2) and removes nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pipelines.cli import EXIT_USAGE, OneLineErrorParser, entry_point
from taxifare_core.contract import local_data_path, local_registry_path

PROG = "python -m pipelines.reset_local_files"
DATA_SUBFOLDERS = ("raw", "processed")
REGISTRY_SUBFOLDERS = ("metrics", "models", "params")
MAX_LISTED = 20  # entries listed per folder; the rest are counted


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--yes", action="store_true", help="remove without asking")
    return parser


def doomed(root: Path, subfolders: tuple[str, ...]) -> list[Path]:
    """What a reset of `root` removes: the kept subfolders' contents, and every other entry of root."""
    if not root.is_dir():
        return []
    entries = []
    for entry in sorted(root.iterdir()):
        if entry.name in subfolders and entry.is_dir() and not entry.is_symlink():
            entries += sorted(entry.iterdir())
        else:
            entries.append(entry)
    return entries


def _size(path: Path) -> tuple[int, int]:
    """(files, bytes) under a path, symlinks not followed."""
    if path.is_symlink() or not path.is_dir():
        return 1, path.lstat().st_size
    files = total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            files += 1
            total += (Path(folder) / name).lstat().st_size
    return files, total


def describe(root: Path, entries: list[Path]) -> list[str]:
    """The lines listing what goes from one folder."""
    lines = []
    for entry in entries[:MAX_LISTED]:
        files, size = _size(entry)
        if entry.is_dir() and not entry.is_symlink():
            lines.append(f"  {entry.relative_to(root)}/  ({files:,} file(s), {size / 1e6:,.1f} MB)")
        else:
            lines.append(f"  {entry.relative_to(root)}  ({size / 1e6:,.1f} MB)")
    if len(entries) > MAX_LISTED:
        lines.append(f"  ... and {len(entries) - MAX_LISTED:,} more")
    return lines


def refused_root(root: Path) -> str | None:
    """Why a folder must not be emptied whole (home, the filesystem root, the current folder), else None."""
    resolved = root.expanduser().resolve()
    for name, forbidden in (
        ("your home folder", Path.home()),
        ("the filesystem root", Path("/")),
        ("the current folder", Path.cwd()),
    ):
        if resolved == forbidden.resolve():
            return f"{root} is {name}: set LOCAL_DATA_PATH / LOCAL_REGISTRY_PATH to the project's own folders"
    return None


def reset(root: Path, subfolders: tuple[str, ...]) -> int:
    """Delete everything under `root`, then recreate its subfolders; returns entries removed."""
    removed = 0
    for entry in doomed(root, subfolders):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        removed += 1
    for name in subfolders:
        (root / name).mkdir(parents=True, exist_ok=True)
    return removed


def confirmed(assume_yes: bool) -> bool | None:
    """True to go ahead, False when the user said no, None when nobody can be asked."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        return None
    try:
        return input("remove all of this? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


@entry_point(PROG)
def main(argv: list[str] | None = None) -> int:
    """List what goes, ask (or take --yes), reset both folders and say what was done."""
    args = build_parser().parse_args(argv)
    folders = ((local_data_path(), DATA_SUBFOLDERS), (local_registry_path(), REGISTRY_SUBFOLDERS))
    for root, _ in folders:
        problem = refused_root(root)
        if problem:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    plan = [(root, subfolders, doomed(root, subfolders)) for root, subfolders in folders]
    if not any(entries for _, _, entries in plan):
        for root, subfolders, _ in plan:
            reset(root, subfolders)
        print(f"nothing to remove in {' or '.join(str(root) for root, _ in folders)}")
        return 0
    for root, subfolders, entries in plan:
        if not entries:
            continue
        print(
            f"{root}: {len(entries):,} entr{'y' if len(entries) == 1 else 'ies'} to remove "
            f"(keeping the empty {', '.join(subfolders)} folders)"
        )
        print("\n".join(describe(root, entries)))
    answer = confirmed(args.yes)
    if answer is None:
        print(f"{PROG}: error: not removing anything without --yes (no terminal to ask on)", file=sys.stderr)
        return EXIT_USAGE
    if not answer:
        print("nothing removed")
        return 0
    for root, subfolders, _ in plan:
        try:
            removed = reset(root, subfolders)
        except OSError as error:
            print(f"{PROG}: error: cannot reset {root}: {error.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(f"reset {root} ({removed} entries removed; kept {', '.join(subfolders)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
