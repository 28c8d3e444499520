"""The Cloud Storage calls `pyarrow.fs` lacks: writes, reads and deletes with generation preconditions.

Every other `gs://` operation goes through `pyarrow.fs.GcsFileSystem`
(`taxifare_core.storage`). Arrow exposes no preconditions, and its own
`create_dir` treats an existing marker as success, so it cannot tell two
trainers racing for one run folder apart, nor two runs racing for one output
lock (`taxifare_core.storage.outputs`). This module keeps those calls on
google-cloud-storage, whose client honours STORAGE_EMULATOR_HOST by itself.

    create_exclusive_marker("gs://bucket/registry/20261126T101500.000001Z/.folder")  # True; False if it existed
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
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    return bucket, key


def _blob(uri: str):
    """The Blob handle of one object (no request made)."""
    bucket, key = split(uri)
    return _client().bucket(bucket).blob(key)


def create_exclusive(uri: str, data: bytes) -> int | None:
    """Write an object only if none exists; its generation, or None when one did.

    Cloud Storage's if-generation-match=0 settles a race; the existence check
    first covers emulators, which ignore preconditions.
    """
    from google.api_core.exceptions import PreconditionFailed

    blob = _blob(uri)
    if blob.exists():
        return None
    try:
        blob.upload_from_string(data, if_generation_match=0)
    except PreconditionFailed:
        return None
    return blob.generation


def create_exclusive_marker(uri: str) -> bool:
    """Write an empty marker object only if none exists; False when one did."""
    return create_exclusive(uri, b"") is not None


def read_with_generation(uri: str) -> tuple[bytes, int] | None:
    """(content, generation) of an object, or None when absent."""
    from google.api_core.exceptions import NotFound

    blob = _client().bucket(split(uri)[0]).get_blob(split(uri)[1])
    if blob is None:
        return None
    try:
        return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
    except NotFound:
        return None


def delete_if_generation(uri: str, generation: int) -> bool:
    """Delete an object only if it is still that generation; False when it changed or is gone."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        _blob(uri).delete(if_generation_match=generation)
    except (NotFound, PreconditionFailed):
        return False
    return True


def replace_if_generation(uri: str, data: bytes, generation: int) -> bool:
    """Write an object only if it is still that generation (0: only if absent); False when it changed.

    The compare-and-swap of a small shared file (the registry's production.json);
    emulators that ignore preconditions make it a plain write.
    """
    from google.api_core.exceptions import PreconditionFailed

    try:
        _blob(uri).upload_from_string(data, content_type="application/json", if_generation_match=generation)
    except PreconditionFailed:
        return False
    return True
