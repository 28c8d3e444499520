"""File operations on local paths or `gs://` URIs, so the trainer and registry work on both.

Local paths use the standard library; any URI with a scheme (`gs://`, ...) goes
through TensorFlow's file API (`tf.io.gfile`), imported only when such a path
is used, so local work and Beam workers never pay for TensorFlow.

    >>> glob("/tmp/processed/train-*.csv")          # sorted list of paths
    >>> with open_binary("gs://bucket/run/metrics.json") as f: ...
"""
from __future__ import annotations

import glob as _glob
import io
import os
import shutil
from typing import IO


def is_remote(path: str) -> bool:
    """True for a URI with a scheme such as gs://."""
    return "://" in str(path)


def _gfile():
    """tf.io.gfile, imported on first remote use."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf.io.gfile


def join(base: str, *parts: str) -> str:
    """Path or URI join that keeps `gs://` intact."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return os.path.join(str(base), *parts)


def glob(pattern: str) -> list[str]:
    """Files matching a glob pattern, sorted."""
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    return sorted(p for p in _glob.glob(os.path.expanduser(str(pattern))) if os.path.isfile(p))


def exists(path: str) -> bool:
    """True when the file or folder exists."""
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    """True when the path is a folder."""
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Create a folder and its parents (no error when it exists)."""
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names of a folder's entries (no trailing slashes), sorted."""
    if is_remote(path):
        return sorted(name.rstrip("/") for name in _gfile().listdir(path))
    return sorted(os.listdir(path))


class _GFileRaw(io.RawIOBase):
    """A tf.io.gfile.GFile opened for reading, as a standard raw stream (pyarrow needs `closed`, `readinto`)."""

    def __init__(self, handle):
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


def open_binary(path: str, mode: str = "rb") -> IO[bytes]:
    """A binary file object for reading ("rb", buffered) or writing ("wb")."""
    if not is_remote(path):
        return open(path, mode)
    handle = _gfile().GFile(path, mode)
    return io.BufferedReader(_GFileRaw(handle), buffer_size=8 << 20) if "r" in mode else handle


def read_text(path: str) -> str:
    """The whole file as UTF-8 text."""
    with open_binary(path) as f:
        return f.read().decode()


def write_bytes(path: str, data: bytes) -> None:
    """Write a file atomically on local disk (temp file + rename); plain write on remote."""
    if is_remote(path):
        with open_binary(path, "wb") as f:
            f.write(data)
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text (atomically on local disk)."""
    write_bytes(path, text.encode())


def copy_file(source: str, destination: str) -> None:
    """Copy one file between any two local or remote paths, replacing the destination."""
    if is_remote(source) or is_remote(destination):
        _gfile().copy(source, destination, overwrite=True)
    else:
        temporary = f"{destination}.tmp-{os.getpid()}"
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)


def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (no error when absent)."""
    if is_remote(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)
