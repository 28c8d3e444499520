"""Crash-safe output folders on gs:// (a local GCS emulator): publish, refuse incomplete sets, the lock.

.venv/bin/python -m pytest tests/test_outputs_gcs.py -q
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from taxifare_core import storage
from taxifare_core.storage import outputs
from taxifare_core.training import reader

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

BUCKET = "taxifare-outputs-test"


def test_publish_resolve_and_refuse_an_incomplete_set_on_gs(gs_root):
    folder = f"{gs_root}/processed"
    run = outputs.new_run_name()
    storage.write_text(f"{folder}/{run}/train-00000-of-00002.csv", "1,2\n")
    storage.write_text(f"{folder}/{run}/train-00001-of-00002.csv", "3,4\n")
    storage.write_text(f"{folder}/beam-temp-train-0a/x", "x")  # someone else's: never removed
    outputs.publish(folder, run, {"train_rows": 2})
    assert json.loads(storage.read_text(f"{folder}/summary.json"))["output"]["run"] == run
    assert reader.shard_paths(f"{folder}/train-*.csv") == [
        f"{folder}/{run}/train-00000-of-00002.csv",
        f"{folder}/{run}/train-00001-of-00002.csv",
    ]
    stale = outputs.new_run_name()  # a killed run's folder: marked, so provably this project's
    storage.write_text(f"{folder}/{stale}/{outputs.MARKER_FILE}", "{}")
    storage.write_text(f"{folder}/{stale}/train-00000-of-00001.csv", "9\n")
    assert outputs.foreign_entries(folder) == []
    assert outputs.tidy(folder, outputs.read_manifest(folder), None) == ([stale], [])
    assert storage.listdir(folder) == sorted([run, "beam-temp-train-0a", "summary.json"])  # not ours: kept
    storage.remove_file(f"{folder}/{run}/train-00001-of-00002.csv")
    with pytest.raises(
        reader.ShardError, match=f"incomplete output in {folder}: .*train-00001-of-00002.csv is missing"
    ):
        reader.shard_paths(f"{folder}/train-*.csv")


def test_gs_lock_refuses_a_live_holder_and_takes_over_a_dead_one_on_this_host(gs_root):
    folder = f"{gs_root}/locked"
    with outputs.OutputLock(folder):
        with pytest.raises(outputs.OutputLockedError, match="is being written by another run .*delete gs://"):
            outputs.OutputLock(folder).acquire()
    assert not storage.exists(f"{folder}/{outputs.LOCK_FILE}")  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    storage.write_text(
        f"{folder}/{outputs.LOCK_FILE}",
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}),
    )
    lock = outputs.OutputLock(folder).acquire()
    assert "took over the lock of a run that is no longer running" in lock.warning
    lock.release()
