"""File operations on local paths or `gs://` URIs, so the reader, trainer and registry work on both.

One code path on `pyarrow.fs`: local paths go through `LocalFileSystem`,
`gs://` URIs through `GcsFileSystem` (your application-default credentials),
or a local GCS emulator when STORAGE_EMULATOR_HOST is set (anonymous, as
Google's own clients do). Other URI schemes are refused with one clear error.
What Arrow lacks is a few lines here, each saying why: a glob, sub-folders of
a Cloud Storage listing, an atomic local write, and (in `taxifare_core.storage.gcs`)
the exclusive create that makes run folders collision-safe.

    glob("/tmp/processed/train-*.csv")          # sorted list of paths
    write_text("gs://bucket/run/metrics.json", text)   # atomic: whole or not at all
    stream = open_input_stream("gs://bucket/processed/train-00000-of-00004.csv")  # for pyarrow.csv
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import os
import re

import pyarrow as pa
import pyarrow.fs as pafs

from taxifare_core.storage import gcs

# Raised for a location the program cannot use (scheme, credentials): one clear line.
StorageError = gcs.StorageError

SCHEME = gcs.SCHEME
# The empty object that makes a Cloud Storage folder exist (create_folder_exclusive).
# Not the console's `name/` marker: emulators that keep objects as files cannot
# hold both `name/` and `name/file`. Listings never show it.
FOLDER_MARKER = ".folder"
# How long one Cloud Storage call retries before it fails: a stopped emulator or
# a lost network ends in an error, not a wait of the client's default 15 minutes.
RETRY_TIME_LIMIT = datetime.timedelta(seconds=20)
_WILDCARD = re.compile(r"[*?\[]")
_LOCAL = pafs.LocalFileSystem()


def is_remote(path: str) -> bool:
    """True for a URI with a scheme such as gs://."""
    return "://" in str(path)


def _remote(path: str) -> bool:
    """is_remote, with StorageError for a scheme other than gs://."""
    if is_remote(path) and not str(path).startswith(SCHEME):
        raise StorageError(f"unsupported location {path}: use a local path or gs://bucket/...")
    return is_remote(path)


@functools.lru_cache(maxsize=4)
def _gcs_for(emulator_host: str | None) -> pafs.GcsFileSystem:
    """One Arrow GCS filesystem per endpoint: the emulator at `emulator_host`, or Cloud Storage."""
    if emulator_host:
        scheme, _, host_port = emulator_host.rpartition("://")
        return pafs.GcsFileSystem(
            anonymous=True,
            scheme=scheme or "http",
            endpoint_override=host_port.rstrip("/"),
            retry_time_limit=RETRY_TIME_LIMIT,
        )
    # Arrow looks for credentials only at the first call and then retries for
    # RETRY_TIME_LIMIT; asking google-auth first fails at once, in one line.
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise StorageError(gcs.CREDENTIALS_HINT) from None
    return pafs.GcsFileSystem(retry_time_limit=RETRY_TIME_LIMIT)


def _resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(Arrow filesystem, path inside it): `gs://bucket/key` -> (GCS, "bucket/key")."""
    path = str(path)
    if _remote(path):
        return _gcs_for(os.environ.get("STORAGE_EMULATOR_HOST")), path[len(SCHEME) :].rstrip("/")
    return _LOCAL, os.path.expanduser(path)


def _outer(path: str, inner: str) -> str:
    """An Arrow path back in the caller's form (gs:// again for Cloud Storage)."""
    return SCHEME + inner if is_remote(path) else inner


def _one_line(error: OSError, args: tuple) -> str:
    """google-cloud-cpp's status text (several hundred characters), cut to what a user reads."""
    text = " ".join(str(error).split())
    if "OAuth2 access token" in text:
        return gcs.CREDENTIALS_HINT
    call = re.search(r"gcloud-cpp\.retry\.function=(\w+)", text)
    text = text.split(" error_info=")[0].split("google::cloud::Status(")[-1]
    uris = ", ".join(arg for arg in args if isinstance(arg, str) and arg.startswith(SCHEME))
    return f"Cloud Storage {call.group(1) if call else 'call'} on {uris}: {text[:200]}"


def _cloud_errors_in_one_line(function):
    """google-cloud-cpp's errors in one line: a missing object or bucket stays FileNotFoundError,
    the rest becomes StorageError (credentials, an unreachable endpoint)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except StorageError:
            raise
        except OSError as error:
            if "google::cloud::Status" not in str(error):
                raise
            kind = FileNotFoundError if isinstance(error, FileNotFoundError) else StorageError
            raise kind(_one_line(error, args)) from None

    return wrapper


def join(base: str, *parts: str) -> str:
    """Path or URI join that keeps `gs://` intact."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return os.path.join(str(base), *parts)


@_cloud_errors_in_one_line
def glob(pattern: str) -> list[str]:
    """Files matching a glob, sorted (Arrow has none).

    `*` and `?` stay within one path segment and skip names starting with a dot
    (the folder marker among them), as on disk.
    """
    fs, inner = _resolve(pattern)
    wildcard = _WILDCARD.search(inner)
    if not wildcard:
        return [str(pattern)] if isfile(pattern) else []
    base = inner[: wildcard.start()].rpartition("/")[0]
    listed = base or "."  # a local pattern without a folder: the working directory
    recursive = "/" in inner[len(base) + 1 :]
    infos = fs.get_file_info(pafs.FileSelector(listed, recursive=recursive, allow_not_found=True))
    key_pattern = inner[len(base) + 1 :] if base else inner
    matches = []
    for info in infos:
        relative = info.path[len(listed) + 1 :]
        if (
            info.type == pafs.FileType.File
            and relative.count("/") == key_pattern.count("/")
            and fnmatch.fnmatchcase(relative, key_pattern)
            and _visible(relative, key_pattern)
        ):
            matches.append(f"{base}/{relative}" if base else relative)
    return sorted(_outer(pattern, match) for match in matches)


def _visible(relative: str, key_pattern: str) -> bool:
    """False when a segment starts with a dot its pattern segment does not (glob's hidden files)."""
    return all(
        not name.startswith(".") or part.startswith(".")
        for name, part in zip(relative.split("/"), key_pattern.split("/"))
    )


def _type(path: str) -> pafs.FileType:
    """Arrow's file type of a path (NotFound when absent)."""
    fs, inner = _resolve(path)
    return fs.get_file_info(inner).type


@_cloud_errors_in_one_line
def exists(path: str) -> bool:
    """True when the file or folder exists (a Cloud Storage folder: an object lies under it)."""
    return _type(path) != pafs.FileType.NotFound


@_cloud_errors_in_one_line
def isdir(path: str) -> bool:
    """True when the path is a folder."""
    return _type(path) == pafs.FileType.Directory


@_cloud_errors_in_one_line
def isfile(path: str) -> bool:
    """True when the path is a file (a Cloud Storage object)."""
    return _type(path) == pafs.FileType.File


@_cloud_errors_in_one_line
def size(path: str) -> int:
    """A file's size in bytes; FileNotFoundError when absent."""
    fs, inner = _resolve(path)
    info = fs.get_file_info(inner)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(path)
    return info.size


@_cloud_errors_in_one_line
def version(path: str) -> dict:
    """What tells one state of a file from the next: {"size", "version"} (JSON-ready).

    The version is the modification time in nanoseconds (on Cloud Storage the
    object's update time, which every rewrite changes), so a rewrite at the same
    size is seen too; FileNotFoundError when absent.
    """
    fs, inner = _resolve(path)
    info = fs.get_file_info(inner)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(path)
    return {"size": info.size, "version": str(info.mtime_ns)}


@_cloud_errors_in_one_line
def makedirs(path: str) -> None:
    """Create a folder and its parents (no error when it exists; Cloud Storage needs none)."""
    fs, inner = _resolve(path)
    if fs is _LOCAL:
        fs.create_dir(inner, recursive=True)


@_cloud_errors_in_one_line
def create_folder_exclusive(path: str) -> bool:
    """Create a folder only if it does not exist yet (atomic); False when it already did.

    Arrow's create_dir succeeds on an existing folder, so it cannot settle a race:
    on disk os.makedirs (mkdir fails on an existing folder); on Cloud Storage the
    folder's marker is written with an if-generation-match=0 precondition
    (`taxifare_core.storage.gcs`; the emulator ignores it, hence the check first).
    """
    if not _remote(path):
        try:
            os.makedirs(os.path.expanduser(path))
        except FileExistsError:
            return False
        return True
    if isdir(path):
        return False
    return gcs.create_exclusive_marker(join(path, FOLDER_MARKER))


@_cloud_errors_in_one_line
def listdir(path: str) -> list[str]:
    """Names of a folder's entries (no trailing slashes), sorted; the folder marker is never listed.

    Arrow's Cloud Storage listing of one level shows objects only, not the
    implicit sub-folders, so on gs:// the whole tree is listed and cut to its
    first level (a registry holds a few files per run).
    """
    fs, inner = _resolve(path)
    if fs is _LOCAL:
        names = {info.base_name for info in fs.get_file_info(pafs.FileSelector(inner))}
    else:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
        names = {info.path[len(inner) + 1 :].split("/")[0] for info in infos}
    return sorted(name for name in names if name and name != FOLDER_MARKER)


@_cloud_errors_in_one_line
def open_input_stream(path: str) -> pa.NativeFile:
    """An Arrow input stream over a file, decompressed by extension (.gz, .bz2, .zst, .lz4).

    What pyarrow's CSV reader wants: gs:// is read by Arrow's own client, not
    through a Python file object.
    """
    fs, inner = _resolve(path)
    return fs.open_input_stream(inner, compression="detect")


@_cloud_errors_in_one_line
def open_input_file(path: str) -> pa.NativeFile:
    """A random-access Arrow file (what Parquet's reader wants: it reads the footer first)."""
    fs, inner = _resolve(path)
    return fs.open_input_file(inner)


@_cloud_errors_in_one_line
def read_text(path: str) -> str:
    """The whole file as UTF-8 text."""
    fs, inner = _resolve(path)
    with fs.open_input_stream(inner, compression=None) as stream:
        return stream.read().decode()


@_cloud_errors_in_one_line
def write_bytes(path: str, data: bytes) -> None:
    """Write a file atomically (local: temp file + rename; Cloud Storage objects are replaced whole).

    A missing local parent folder is made (Cloud Storage needs none). The one way this
    project writes a whole file: JSON records, stats.json, report.html, summary.json.
    """
    fs, inner = _resolve(path)
    target = inner if fs is not _LOCAL else f"{inner}.tmp-{os.getpid()}"
    if fs is _LOCAL:
        fs.create_dir(os.path.dirname(inner) or ".", recursive=True)
    with fs.open_output_stream(target, compression=None) as stream:
        stream.write(data)
    if target != inner:
        fs.move(target, inner)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text (atomically)."""
    write_bytes(path, text.encode())


@_cloud_errors_in_one_line
def copy_file(source: str, destination: str) -> None:
    """Copy one file between any two local or gs:// paths, replacing the destination.

    gs:// to gs:// is copied server side; a local destination appears whole
    (temp file + rename), a Cloud Storage object once its upload completes.
    """
    source_fs, source_inner = _resolve(source)
    destination_fs, destination_inner = _resolve(destination)
    local = destination_fs is _LOCAL
    target = f"{destination_inner}.tmp-{os.getpid()}" if local else destination_inner
    try:
        if source_fs is destination_fs:
            source_fs.copy_file(source_inner, target)
        else:
            pafs.copy_files(
                source_inner,
                target,
                source_filesystem=source_fs,
                destination_filesystem=destination_fs,
                use_threads=False,
            )
        if local:
            destination_fs.move(target, destination_inner)
    except BaseException:
        if local and os.path.exists(target):
            os.remove(target)
        raise


@_cloud_errors_in_one_line
def move(source: str, destination: str) -> None:
    """Rename a file or folder within one filesystem, replacing a destination file.

    Local: one rename, atomic. Cloud Storage has no rename: each object is
    copied server side, then the source deleted, so a move of a folder is NOT
    atomic (a crash in between leaves both, never neither).
    """
    source_fs, source_inner = _resolve(source)
    destination_fs, destination_inner = _resolve(destination)
    if source_fs is not destination_fs:
        raise ValueError(f"cannot move between filesystems: {source} -> {destination}")
    if source_fs is _LOCAL or isfile(source):
        source_fs.move(source_inner, destination_inner)
        return
    infos = source_fs.get_file_info(pafs.FileSelector(source_inner, recursive=True))
    for info in infos:
        if info.type == pafs.FileType.File:
            source_fs.copy_file(info.path, destination_inner + info.path[len(source_inner) :])
    source_fs.delete_dir_contents(source_inner, missing_dir_ok=True)


@_cloud_errors_in_one_line
def remove_file(path: str) -> None:
    """Delete one file (no error when absent)."""
    fs, inner = _resolve(path)
    try:
        fs.delete_file(inner)
    except FileNotFoundError:
        pass


@_cloud_errors_in_one_line
def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (no error when absent; never a whole bucket)."""
    fs, inner = _resolve(path)
    if fs is _LOCAL:
        if fs.get_file_info(inner).type == pafs.FileType.Directory:
            fs.delete_dir(inner)
        return
    if "/" not in inner:
        raise ValueError(f"refusing to empty a whole bucket: {path}")
    # Arrow's delete_dir would then delete a `name/` marker this layer never
    # writes, and fail on its absence; emptying the prefix removes everything.
    fs.delete_dir_contents(inner, missing_dir_ok=True)


class NotWritableError(StorageError):
    """A folder the program cannot write into (read-only mount, immutable folder, no permission): one line."""


def check_writable(folder: str) -> None:
    """Create `folder` if needed, then create and remove a probe file in it; NotWritableError when that fails.

    A real write, not a permission check: root passes any `os.access` test, yet a
    read-only mount or an immutable folder (`chattr +i`) still refuses it.
    """
    probe = join(folder, f".write-probe-{os.getpid()}-{os.urandom(3).hex()}")
    try:
        makedirs(folder)
        fs, inner = _resolve(probe)
        with fs.open_output_stream(inner, compression=None):
            pass
        fs.delete_file(inner)
    except OSError as error:
        raise NotWritableError(f"{folder} cannot be written ({_reason(error)})") from None


def _reason(error: OSError) -> str:
    """An OSError's reason in a few words (Arrow's local errors carry the errno only in their text)."""
    found = re.search(r"\[errno (\d+)\]", str(error))
    code = error.errno or (int(found.group(1)) if found else None)
    return os.strerror(code) if code else " ".join(str(error).split())[:200]
