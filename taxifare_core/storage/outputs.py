"""Crash-safe output folders: runs write into their own subfolder, and a manifest written last publishes them.

An output folder (preprocessing's or batch prediction's), local or gs://:

    OUTPUT/summary.json            the published run's summary; its "output" entry is the manifest:
                                   {"run": "run-...", "files": {"run-.../train-00000-of-00001.csv": BYTES, ...}}
    OUTPUT/run-<id>/...            the published run's files (shards, dead letter, its own summary.json)
    OUTPUT/run-<other id>/         while a run is writing (or after one failed): not published, never read
    OUTPUT/_LOCK.json              while a run is writing: pid, host, start time

`summary.json` is replaced in one step (local: temp file + rename; Cloud
Storage: an object upload is atomic), so a reader sees either the previous
complete set or the new complete set, never a mix; a killed run leaves the
previous output untouched. Older run folders are removed only once the new
manifest is in place. Readers keep using the documented globs:

    resolve("OUTPUT/train-*.csv")    # the published run's train shards, each checked against the manifest
    # -> ['OUTPUT/run-20261130T182400Z-1a2b3c/train-00000-of-00001.csv']

One run at a time per folder: `OutputLock` (local: flock on OUTPUT/_LOCK.json,
released by the kernel when its process dies, so a killed run's lock is taken
over; gs://: an object created with if-generation-match=0).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import socket
import sys
from datetime import UTC, datetime

from taxifare_core import storage

SUMMARY_FILE = "summary.json"
LOCK_FILE = "_LOCK.json"
RUN_PREFIX = "run-"
MANIFEST_KEY = "output"
BEAM_TEMP_PREFIX = "beam-temp-"
_WILDCARDS = "*?["
# Only folders this module named are ever removed as stale runs.
_RUN_NAME = re.compile(r"^run-\d{8}T\d{6}Z-[0-9a-f]{6}$")


class IncompleteOutputError(ValueError):
    """An output folder's files do not match its manifest (or no run of it ever finished): one line."""


class OutputLockedError(RuntimeError):
    """Another live run holds the output folder's lock: one line."""


def new_run_name() -> str:
    """A fresh, unique run folder name: run-<UTC time>-<random hex>."""
    return f"{RUN_PREFIX}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}Z-{secrets.token_hex(3)}"


def _split(pattern: str) -> tuple[str, str]:
    """A glob -> (its folder, its file-name pattern)."""
    folder, _, name = str(pattern).rstrip("/").rpartition("/")
    return folder, name


def check_output_folder(folder: str) -> None:
    """ValueError (one line) when the output path is a file or cannot be made a folder."""
    if storage.isfile(folder):
        raise ValueError(f"output {folder} is a file, not a folder: pass another --output")
    try:
        storage.makedirs(folder)
    except OSError as error:
        raise ValueError(f"cannot create output folder {folder}: {error.strerror or error}") from None


def read_manifest(folder: str) -> dict | None:
    """The published manifest ({"run", "files"}) of an output folder; None when none was published."""
    path = storage.join(folder, SUMMARY_FILE)
    if not storage.isfile(path):
        return None
    try:
        summary = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError):
        raise IncompleteOutputError(f"{path} is not valid JSON: the output in {folder} is unusable; "
                                    "re-run the job that writes it") from None
    manifest = summary.get(MANIFEST_KEY) if isinstance(summary, dict) else None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def run_files(folder: str, run_name: str) -> dict[str, int]:
    """Every file directly in OUTPUT/run_name, as {path relative to OUTPUT: bytes}."""
    paths = storage.glob(storage.join(folder, run_name, "*"))
    return {f"{run_name}/{path.rsplit('/', 1)[-1]}": storage.size(path) for path in paths}


def _referenced_runs(manifest: dict | None) -> set[str]:
    """The run folders a manifest's files live in."""
    return {rel.split("/", 1)[0] for rel in (manifest or {}).get("files", {})}


def check_complete(folder: str, manifest: dict, names: list[str] | None = None) -> None:
    """IncompleteOutputError naming the first listed file that is missing or of another size."""
    files = manifest["files"]
    for rel in names if names is not None else files:
        path = storage.join(folder, rel)
        try:
            found = storage.size(path)
        except FileNotFoundError:
            raise IncompleteOutputError(
                f"incomplete output in {folder}: {rel} is missing (summary.json lists it); "
                "re-run the job that writes it") from None
        if found != files[rel]:
            raise IncompleteOutputError(
                f"incomplete output in {folder}: {rel} has {found:,} bytes, summary.json says {files[rel]:,}; "
                "re-run the job that writes it")


def resolve(pattern: str) -> list[str] | None:
    """The published files a glob names, checked against the manifest; None when its folder has no manifest.

    `OUTPUT/train-*.csv` matches the file names of the published run's files
    (wherever they live under OUTPUT), so documented globs keep working.
    A glob whose folder part has wildcards is not resolved (None).
    """
    folder, name = _split(pattern)
    if not folder or any(ch in folder for ch in _WILDCARDS):
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    names = sorted(rel for rel in manifest["files"] if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], name))
    check_complete(folder, manifest, names)
    return [storage.join(folder, rel) for rel in names]


def published_path(path: str) -> str:
    """Where a file named OUTPUT/NAME really is: inside the published run folder, or `path` itself.

    For single files such as OUTPUT/stats.json; a folder without a manifest (the
    flat layout, a hand-made folder) keeps the plain path. IncompleteOutputError
    when the manifest lists the file but it is missing or of another size.
    """
    found = resolve(path)
    return found[0] if found else path


def unfinished_hint(pattern: str) -> str | None:
    """When a glob matches nothing: a line saying its folder holds only unpublished runs, else None."""
    folder, _ = _split(pattern)
    if not folder or any(ch in folder for ch in _WILDCARDS) or not storage.isdir(folder):
        return None
    runs = [name for name in storage.listdir(folder) if _RUN_NAME.match(name)]
    if runs and read_manifest(folder) is None:
        return (f"no complete output in {folder}: {len(runs)} run folder(s) but no published summary.json "
                "(a run failed or is still writing); re-run the job that writes it")
    return None


def check_kind(folder: str, manifest: dict | None, kind: str) -> None:
    """ValueError (one line) when the folder publishes another job's output (e.g. predictions into processed data)."""
    found = (manifest or {}).get("kind")
    if found and found != kind:
        raise ValueError(f"output {folder} holds a {found} output, not a {kind} one: pass another --output")


def publish(folder: str, run_name: str, summary: dict, carried: dict[str, int] | None = None,
            kind: str | None = None) -> dict:
    """Make run_name the folder's output: write OUTPUT/summary.json (with the manifest) in one step.

    `carried` files (of an older run, e.g. a raw cache a CSV run read) stay listed;
    `kind` names the job ("preprocess", "predict"). Returns the summary as written.
    """
    files = {**(carried or {}), **run_files(folder, run_name)}
    files.pop(f"{run_name}/{SUMMARY_FILE}", None)
    manifest = {"run": run_name, **({"kind": kind} if kind else {}), "files": dict(sorted(files.items()))}
    published = {**summary, MANIFEST_KEY: manifest}
    text = json.dumps(published, indent=2) + "\n"
    storage.write_text(storage.join(folder, run_name, SUMMARY_FILE), text)
    storage.write_text(storage.join(folder, SUMMARY_FILE), text)  # the one step that publishes
    return published


def remove_litter(folder: str, keep_manifest: dict | None, extra_names: list[str] = ()) -> list[str]:
    """Delete what no published manifest names: other run folders, beam-temp-* folders, `extra_names` globs.

    Call only while holding the folder's lock (no other run is writing there).
    Returns the names removed.
    """
    keep = _referenced_runs(keep_manifest)
    removed = []
    for name in storage.listdir(folder):
        stale_run = bool(_RUN_NAME.match(name)) and name not in keep
        # *.tmp-PID: an atomic write (storage.write_bytes) killed before its rename.
        litter = stale_run or name.startswith(BEAM_TEMP_PREFIX) or fnmatch.fnmatchcase(name, "*.tmp-*")
        if litter or any(fnmatch.fnmatchcase(name, pattern) for pattern in extra_names):
            path = storage.join(folder, name)
            if storage.isfile(path):
                storage.remove_file(path)
            else:
                storage.remove_tree(path)
            removed.append(name)
    return removed


def remove_beam_temp(folder: str) -> None:
    """Delete beam-temp-* folders directly under `folder` (a failed write's leftovers)."""
    if storage.isdir(folder):
        for name in storage.listdir(folder):
            if name.startswith(BEAM_TEMP_PREFIX):
                storage.remove_tree(storage.join(folder, name))


def claim(folder: str) -> OutputLock:
    """Make `folder` ready for a run and take its lock; the caller releases it when the run is over.

    ValueError (one line) when the path is a file or cannot be made a folder;
    OutputLockedError when another live run holds the lock. The lock's `warning`
    says when a dead run's lock was taken over.
    """
    check_output_folder(folder)
    return OutputLock(folder).acquire()


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(info: dict) -> str:
    """`pid N on HOST since T` of a lock's content."""
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')}"


class OutputLock:
    """One run at a time per output folder.

        with OutputLock(folder) as lock:       # OutputLockedError when a live run holds it
            if lock.warning: print(lock.warning)
            ...

    `warning` says when a dead run's lock was taken over.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path = storage.join(folder, LOCK_FILE)
        self.warning: str | None = None
        self._fd: int | None = None
        self._generation: int | None = None
        self.info = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join(sys.argv)[:300],
        }

    def _busy(self, info: dict) -> OutputLockedError:
        return OutputLockedError(
            f"output {self.folder} is being written by another run ({_holder_text(info)}); "
            "wait or use another --output")

    def acquire(self) -> OutputLock:
        """Take the lock (or a dead run's); OutputLockedError when a live run holds it."""
        if storage.is_remote(self.path):
            self._acquire_remote()
        else:
            self._acquire_local()
        return self

    def _acquire_local(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _parse(os.pread(fd, 4096, 0))
                os.close(fd)
                raise self._busy(info) from None
            # The holder we waited on may have unlinked the file: lock only the file at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 4096, 0)
        if previous.strip():
            self.warning = f"took over the lock of a run that is no longer running ({_holder_text(_parse(previous))})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _acquire_remote(self) -> None:
        from taxifare_core.storage import gcs

        data = (json.dumps(self.info) + "\n").encode()
        for _ in range(3):
            generation = gcs.create_exclusive(self.path, data)
            if generation is not None:
                self._generation = generation
                return
            held = gcs.read_with_generation(self.path)
            if held is None:
                continue
            info = _parse(held[0])
            if info.get("host") == self.info["host"] and isinstance(info.get("pid"), int) \
                    and not _pid_alive(info["pid"]):
                if gcs.delete_if_generation(self.path, held[1]):
                    self.warning = f"took over the lock of a run that is no longer running ({_holder_text(info)})"
                continue
            error = self._busy(info)
            raise OutputLockedError(f"{error}; if that run is dead, delete {self.path}") from None
        raise self._busy({})

    def release(self) -> None:
        """Drop the lock file and the lock."""
        if self._fd is not None:
            import fcntl

            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._generation is not None:
            from taxifare_core.storage import gcs

            gcs.delete_if_generation(self.path, self._generation)
            self._generation = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(data: bytes) -> dict:
    """A lock file's JSON content ({} when unreadable)."""
    try:
        info = json.loads(data.decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}
