"""stats.json, the file: its name, the check of one read back, and its copy beside a trained model.

    payload = parse_stats(storage.read_text(path), path)   # StatsError (one line) if it is not one
    copy_stats_beside("OUTPUT/train-*.csv", run_dir)       # the trainer: the rows' statistics beside the model

The statistics themselves are `taxifare_core.stats`; drift between two of them `taxifare_core.drift`.
"""

from __future__ import annotations

import json

from taxifare_core import storage
from taxifare_core.storage import outputs

STATS_FILE = "stats.json"  # in a preprocessing output folder and in a model's run folder


class StatsError(ValueError):
    """A file or object that is not a statistics file of this project."""


def check_stats(payload, source: str) -> dict:
    """`payload` if it is a stats.json of this project, else StatsError naming `source`."""
    splits = payload.get("splits") if isinstance(payload, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise StatsError(f'{source} is not a statistics file (no "splits"); expected a run\'s stats.json')
    for name, split in splits.items():
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or "rows" not in split:
            raise StatsError(f"{source} is not a statistics file (split {name!r} has no rows and columns)")
        for column in split["columns"]:
            if not isinstance(column, dict) or "name" not in column or "histogram" not in column:
                raise StatsError(f"{source} is not a statistics file (a column of {name!r} has no histogram)")
    return payload


def parse_stats(text: str, source: str) -> dict:
    """A stats.json's text -> its dict; StatsError when it is not JSON or not a statistics file."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise StatsError(f"{source} is not a statistics file (not JSON)") from None
    return check_stats(payload, source)


def copy_stats_beside(shards_pattern: str, run_dir: str) -> str | None:
    """Copy the stats.json of the folder holding `shards_pattern` into `run_dir`; its name there, or None.

    The trainer calls it so a model's run folder holds the statistics of the rows it
    was trained on (batch prediction scores skew against them). Local or gs://.
    """
    folder = str(shards_pattern).rstrip("/").rsplit("/", 1)[0]
    source = outputs.published_path(storage.join(folder, STATS_FILE))
    if not storage.exists(source):
        return None
    storage.copy_file(source, storage.join(run_dir, STATS_FILE))
    return STATS_FILE
