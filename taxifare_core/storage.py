"""File operations on local paths or `gs://` URIs, so the trainer and registry work on both.

Local paths use the standard library; `gs://` URIs go through
google-cloud-storage (`taxifare_core.gcs`), which also talks to a local GCS
emulator when STORAGE_EMULATOR_HOST is set. Other URI schemes are refused
with one clear error.

    >>> glob("/tmp/processed/train-*.csv")          # sorted list of paths
    >>> with open_binary("gs://bucket/run/metrics.json") as f: ...
"""
from __future__ import annotations

import glob as _glob
import os
import shutil
from typing import IO

from taxifare_core import gcs

# Raised for a location the program cannot use (scheme, credentials): one clear line.
StorageError = gcs.StorageError


def is_remote(path: str) -> bool:
    """True for a URI with a scheme such as gs://."""
    return "://" in str(path)


def _remote(path: str) -> bool:
    """is_remote, with StorageError for a scheme other than gs://."""
    if is_remote(path) and not str(path).startswith(gcs.SCHEME):
        raise StorageError(f"unsupported location {path}: use a local path or gs://bucket/...")
    return is_remote(path)


def join(base: str, *parts: str) -> str:
    """Path or URI join that keeps `gs://` intact."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return os.path.join(str(base), *parts)


def glob(pattern: str) -> list[str]:
    """Files matching a glob pattern, sorted."""
    if _remote(pattern):
        return gcs.glob(pattern)
    return sorted(p for p in _glob.glob(os.path.expanduser(str(pattern))) if os.path.isfile(p))


def exists(path: str) -> bool:
    """True when the file or folder exists."""
    return gcs.exists(path) if _remote(path) else os.path.exists(path)


def size(path: str) -> int:
    """A file's size in bytes; FileNotFoundError when absent."""
    return gcs.size(path) if _remote(path) else os.path.getsize(path)


def isfile(path: str) -> bool:
    """True when the path is a file (a Cloud Storage object)."""
    if _remote(path):
        try:
            gcs.size(path)
        except FileNotFoundError:
            return False
        return True
    return os.path.isfile(path)


def isdir(path: str) -> bool:
    """True when the path is a folder."""
    return gcs.isdir(path) if _remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Create a folder and its parents (no error when it exists; Cloud Storage needs none)."""
    if not _remote(path):
        os.makedirs(path, exist_ok=True)


def create_folder_exclusive(path: str) -> bool:
    """Create a folder only if it does not exist yet (atomic); False when it already did."""
    if _remote(path):
        return gcs.create_folder_exclusive(path)
    try:
        os.makedirs(path)
    except FileExistsError:
        return False
    return True


def listdir(path: str) -> list[str]:
    """Names of a folder's entries (no trailing slashes), sorted."""
    return gcs.listdir(path) if _remote(path) else sorted(os.listdir(path))


def open_binary(path: str, mode: str = "rb") -> IO[bytes]:
    """A binary file object for reading ("rb") or writing ("wb")."""
    return gcs.open_binary(path, mode) if _remote(path) else open(path, mode)


def read_text(path: str) -> str:
    """The whole file as UTF-8 text."""
    if _remote(path):
        return gcs.read_bytes(path).decode()
    with open(path, "rb") as f:
        return f.read().decode()


def write_bytes(path: str, data: bytes) -> None:
    """Write a file atomically (local: temp file + rename; Cloud Storage objects are replaced whole)."""
    if _remote(path):
        gcs.write_bytes(path, data)
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text (atomically)."""
    write_bytes(path, text.encode())


def copy_file(source: str, destination: str) -> None:
    """Copy one file between any two local or remote paths, replacing the destination."""
    remote_source, remote_destination = _remote(source), _remote(destination)
    if remote_source and remote_destination:
        gcs.copy(source, destination)
    elif remote_source:
        gcs.download(source, destination)
    elif remote_destination:
        gcs.upload(source, destination)
    else:
        temporary = f"{destination}.tmp-{os.getpid()}"
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)


def remove_file(path: str) -> None:
    """Delete one file (no error when absent)."""
    if _remote(path):
        gcs.delete(path)
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (no error when absent)."""
    if _remote(path):
        gcs.remove_tree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)
