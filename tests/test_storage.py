"""taxifare_core.storage on local disk (real files), and its one-line errors for gs:// without a server.

The gs:// side against a running GCS emulator is tests/test_gcs_storage.py.

    .venv/bin/python -m pytest tests/test_storage.py -q
"""

from __future__ import annotations

import datetime
import gzip
import socket

import pytest

from taxifare_core import storage


def test_glob_matches_like_the_shell(tmp_path, monkeypatch):
    for name in ("train-1.csv", "train-2.csv", ".train-hidden.csv", "val-1.csv", "sub/train-3.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("1\n")
    assert storage.glob(str(tmp_path / "train-*.csv")) == [str(tmp_path / "train-1.csv"), str(tmp_path / "train-2.csv")]
    assert storage.glob(str(tmp_path / "*" / "train-*.csv")) == [str(tmp_path / "sub" / "train-3.csv")]
    assert storage.glob(str(tmp_path / ".train-*.csv")) == [str(tmp_path / ".train-hidden.csv")]
    assert storage.glob(str(tmp_path / "val-1.csv")) == [str(tmp_path / "val-1.csv")]
    assert storage.glob(str(tmp_path / "none" / "*.csv")) == []
    monkeypatch.chdir(tmp_path)
    assert storage.glob("train-?.csv") == ["train-1.csv", "train-2.csv"]  # relative stays relative
    assert storage.glob("sub/*.csv") == ["sub/train-3.csv"]


def test_files_folders_and_moves(tmp_path):
    base = str(tmp_path / "base")
    storage.makedirs(storage.join(base, "a"))
    storage.write_text(storage.join(base, "a", "one.txt"), "1")
    storage.write_bytes(storage.join(base, "a", "two.bin"), b"\x00\x02")
    assert storage.listdir(base) == ["a"] and storage.listdir(storage.join(base, "a")) == ["one.txt", "two.bin"]
    assert storage.isfile(storage.join(base, "a", "one.txt")) and storage.isdir(storage.join(base, "a"))
    assert storage.size(storage.join(base, "a", "two.bin")) == 2
    assert storage.open_input_stream(storage.join(base, "a", "two.bin")).read() == b"\x00\x02"
    with pytest.raises(FileNotFoundError):
        storage.size(storage.join(base, "a", "missing"))
    with pytest.raises(FileNotFoundError):
        storage.copy_file(storage.join(base, "missing"), storage.join(base, "copy"))
    assert not [name for name in storage.listdir(base) if ".tmp-" in name]  # no temp left behind

    assert storage.create_folder_exclusive(storage.join(base, "run")) and not storage.create_folder_exclusive(
        storage.join(base, "run")
    )
    storage.move(storage.join(base, "a"), storage.join(base, "run", "a"))  # a folder: one rename
    storage.write_text(storage.join(base, "three.txt"), "3")
    storage.move(storage.join(base, "three.txt"), storage.join(base, "run", "a", "one.txt"))  # replaces
    assert storage.read_text(storage.join(base, "run", "a", "one.txt")) == "3" and not storage.exists(
        storage.join(base, "a")
    )
    storage.remove_file(storage.join(base, "run", "a", "one.txt"))
    storage.remove_file(storage.join(base, "run", "a", "one.txt"))  # absent: no error
    storage.remove_tree(storage.join(base, "run"))
    storage.remove_tree(storage.join(base, "run"))
    assert storage.listdir(base) == []


def test_the_csv_stream_decompresses_by_extension(tmp_path):
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(b"1,2\n"))
    assert storage.open_input_stream(str(path)).read() == b"1,2\n"  # the reader's stream: by extension


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_one_line_not_a_wait(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(storage, "RETRY_TIME_LIMIT", datetime.timedelta(seconds=1))
    with pytest.raises(storage.StorageError) as raised:
        storage.exists("gs://bucket/file.csv")
    message = str(raised.value)
    assert "gs://bucket/file.csv" in message and "UNAVAILABLE" in message and "\n" not in message


def test_missing_credentials_are_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(storage.StorageError, match="gcloud auth application-default login"):
        storage.glob("gs://bucket/train-*.csv")


def test_other_schemes_are_refused():
    with pytest.raises(storage.StorageError, match="unsupported location s3://"):
        storage.read_text("s3://bucket/file.csv")
