"""The one Cloud Storage call `pyarrow.fs` lacks: a write that fails when the object exists.

Every other `gs://` operation goes through `pyarrow.fs.GcsFileSystem`
(`taxifare_core.storage`). Arrow exposes no preconditions, and its own
`create_dir` treats an existing marker as success, so it cannot tell two
trainers racing for one run folder apart. This module keeps that one call on
google-cloud-storage, whose client honours STORAGE_EMULATOR_HOST by itself.

    >>> create_exclusive_marker("gs://bucket/registry/20261126T101500.000001Z/.folder")
    True
"""
from __future__ import annotations

import functools
import os

SCHEME = "gs://"


class StorageError(OSError):
    """A location the program cannot use (scheme, credentials, bucket): one clear line."""


CREDENTIALS_HINT = (
    "gs:// paths need Google credentials: run `gcloud auth application-default login` "
    "(or set STORAGE_EMULATOR_HOST for a local emulator)"
)


@functools.lru_cache(maxsize=4)
def _client_for(emulator_host: str | None):
    """One google-cloud-storage client per endpoint (STORAGE_EMULATOR_HOST, or Cloud Storage itself)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise StorageError(CREDENTIALS_HINT) from None


def _client():
    """The client for the current STORAGE_EMULATOR_HOST."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST"))


def split(uri: str) -> tuple[str, str]:
    """`gs://bucket/key` -> (bucket, key); ValueError for another scheme or no bucket."""
    if not uri.startswith(SCHEME) or len(uri) == len(SCHEME):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    return bucket, key


def _blob(uri: str):
    """The Blob handle of one object (no request made)."""
    bucket, key = split(uri)
    return _client().bucket(bucket).blob(key)


def create_exclusive_marker(uri: str) -> bool:
    """Write an empty object only if none exists (if-generation-match=0); False when one did.

    Cloud Storage settles a race between two writers; the emulator ignores
    preconditions, so callers check for the folder first as well.
    """
    from google.api_core.exceptions import PreconditionFailed

    try:
        _blob(uri).upload_from_string(b"", if_generation_match=0)
    except PreconditionFailed:
        return False
    return True
