"""Cloud Storage (`gs://`) operations behind `taxifare_core.storage`, on google-cloud-storage.

The client honours STORAGE_EMULATOR_HOST (anonymous, as Google's own libraries
do), so the trainer and the registry run against a local GCS emulator exactly
as against Cloud Storage. Folders are implicit in Cloud Storage: a folder
exists when an object lies under it. `create_folder_exclusive` writes an empty
`FOLDER_MARKER` object in it, only if absent, which is what makes registry run
names collision-safe there too; listings never show the marker. (Not the
console's `name/` marker: emulators that keep objects as files cannot hold
both `name/` and `name/file`.)

    >>> glob("gs://bucket/processed/train-*.csv")      # sorted gs:// URIs
    >>> read_bytes("gs://bucket/registry/20261126T101500.000001Z/metrics.json")
"""
from __future__ import annotations

import fnmatch
import functools
import os
import re
from typing import IO

SCHEME = "gs://"
FOLDER_MARKER = ".folder"
_WILDCARD = re.compile(r"[*?\[]")


class StorageError(OSError):
    """A Cloud Storage call failed for a reason the user can act on (credentials, bucket)."""


@functools.lru_cache(maxsize=4)
def _client_for(emulator_host: str | None):
    """One client per endpoint (STORAGE_EMULATOR_HOST, or Cloud Storage itself)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise StorageError(
            "gs:// paths need Google credentials: run `gcloud auth application-default login` "
            "(or set STORAGE_EMULATOR_HOST for a local emulator)"
        ) from None


def _client():
    """The client for the current STORAGE_EMULATOR_HOST."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST"))


def split(uri: str) -> tuple[str, str]:
    """`gs://bucket/key` -> (bucket, key); ValueError for another scheme or no bucket."""
    if not uri.startswith(SCHEME) or len(uri) == len(SCHEME):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    return bucket, key


def _uri(bucket: str, key: str) -> str:
    """`gs://bucket/key`."""
    return f"{SCHEME}{bucket}/{key}"


def _blob(uri: str):
    """The Blob handle of one object (no request made)."""
    bucket, key = split(uri)
    return _client().bucket(bucket).blob(key)


def _folder_prefix(key: str) -> str:
    """A key as a folder prefix: '' for the bucket's root, else ending with one slash."""
    key = key.strip("/")
    return f"{key}/" if key else ""


def _list(bucket: str, prefix: str, delimiter: str | None = None, max_results: int | None = None):
    """The blob iterator of a listing; NotFound (no such bucket) lists nothing."""
    from google.api_core.exceptions import NotFound

    iterator = _client().list_blobs(bucket, prefix=prefix, delimiter=delimiter, max_results=max_results)
    try:
        blobs = list(iterator)
    except NotFound:
        return [], set()
    return blobs, set(iterator.prefixes)


def glob(pattern: str) -> list[str]:
    """Objects matching a glob (`*` and `?` stay within one path segment, as on disk), sorted."""
    bucket, key_pattern = split(pattern)
    wildcard = _WILDCARD.search(key_pattern)
    prefix = key_pattern[:wildcard.start()] if wildcard else key_pattern
    depth = key_pattern.count("/")
    blobs, _ = _list(bucket, prefix)
    return sorted(
        _uri(bucket, blob.name) for blob in blobs
        if not blob.name.endswith("/") and not blob.name.endswith(f"/{FOLDER_MARKER}")
        and blob.name.count("/") == depth
        and fnmatch.fnmatchcase(blob.name, key_pattern)
    )


def isdir(uri: str) -> bool:
    """True when an object or a folder marker lies under the folder."""
    bucket, key = split(uri)
    if not _folder_prefix(key):
        return _client().bucket(bucket).exists()
    blobs, _ = _list(bucket, _folder_prefix(key), max_results=1)
    return bool(blobs)


def exists(uri: str) -> bool:
    """True for an object or a non-empty folder."""
    bucket, key = split(uri)
    if key and not key.endswith("/") and _blob(uri).exists():
        return True
    return isdir(uri)


def listdir(uri: str) -> list[str]:
    """Names directly in a folder (objects and sub-folders, no trailing slashes), sorted."""
    bucket, key = split(uri)
    prefix = _folder_prefix(key)
    blobs, prefixes = _list(bucket, prefix, delimiter="/")
    names = {blob.name[len(prefix):] for blob in blobs} | {p[len(prefix):].rstrip("/") for p in prefixes}
    return sorted(name for name in names if name and name != FOLDER_MARKER)


def create_folder_exclusive(uri: str) -> bool:
    """Write the folder's marker unless the folder exists; False when it did.

    Two writers racing past the first check are told apart by Cloud Storage's
    if-generation-match=0 precondition (the emulator ignores preconditions).
    """
    from google.api_core.exceptions import PreconditionFailed

    if isdir(uri):
        return False
    bucket, key = split(uri)
    marker = _client().bucket(bucket).blob(_folder_prefix(key) + FOLDER_MARKER)
    try:
        marker.upload_from_string(b"", if_generation_match=0)
    except PreconditionFailed:
        return False
    return True


def open_binary(uri: str, mode: str = "rb") -> IO[bytes]:
    """A streaming file object over one object: "rb" (seekable) or "wb"."""
    blob = _blob(uri)
    if "r" in mode:
        if not blob.exists():
            raise FileNotFoundError(uri)
        return blob.open("rb", chunk_size=8 << 20)
    return blob.open("wb", ignore_flush=True)


def read_bytes(uri: str) -> bytes:
    """A whole object; FileNotFoundError when absent."""
    from google.api_core.exceptions import NotFound

    try:
        return _blob(uri).download_as_bytes()
    except NotFound:
        raise FileNotFoundError(uri) from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object (Cloud Storage replaces it atomically)."""
    _blob(uri).upload_from_string(data)


def download(uri: str, local_path: str) -> None:
    """Copy an object to a local file; FileNotFoundError when absent."""
    from google.api_core.exceptions import NotFound

    try:
        _blob(uri).download_to_filename(local_path)
    except NotFound:
        if os.path.exists(local_path):  # the client leaves an empty file behind
            os.remove(local_path)
        raise FileNotFoundError(uri) from None


def upload(local_path: str, uri: str) -> None:
    """Copy a local file to an object, replacing it."""
    _blob(uri).upload_from_filename(local_path)


def copy(source: str, destination: str) -> None:
    """Copy one object to another, server side."""
    blob, target = _blob(source), _blob(destination)
    blob.bucket.copy_blob(blob, target.bucket, target.name)


def remove_tree(uri: str) -> None:
    """Delete every object under a folder, its marker included (never a whole bucket)."""
    bucket, key = split(uri)
    if not _folder_prefix(key):
        raise ValueError(f"refusing to empty a whole bucket: {uri}")
    blobs, _ = _list(bucket, _folder_prefix(key))
    for blob in blobs:
        blob.delete()


def size(uri: str) -> int:
    """An object's size in bytes; FileNotFoundError when absent."""
    blob = _client().bucket(split(uri)[0]).get_blob(split(uri)[1])
    if blob is None:
        raise FileNotFoundError(uri)
    return int(blob.size)


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


def delete(uri: str) -> None:
    """Delete one object (no error when absent)."""
    from google.api_core.exceptions import NotFound

    try:
        _blob(uri).delete()
    except NotFound:
        pass
