"""Crash-safe output folders: runs write into their own subfolder, and a manifest written last publishes them.

An output folder (preprocessing's or batch prediction's), local or gs://:

    OUTPUT/summary.json            the published run's summary; its "output" entry is the manifest:
                                   {"run": "run-...", "files": {"run-.../train-00000-of-00001.csv": BYTES, ...}}
    OUTPUT/run-<id>/...            the published run's files (shards, dead letter, its own summary.json)
    OUTPUT/run-<id>/_RUN.json      the run folder's marker, written first: proof this project made the folder
    OUTPUT/run-<other id>/         while a run is writing, after one failed, or kept unpublished: never read
    OUTPUT/_LOCK.json              while a run is writing: pid, host, start time

`summary.json` is replaced in one step (local: temp file + rename; Cloud
Storage: an object upload is atomic), so a reader sees either the previous
complete set or the new complete set, never a mix; a killed run leaves the
previous output untouched. A job removes only what it can prove it wrote (the run
folders a manifest names or a marker marks), and only once the new manifest is in
place; a folder that never held an output of this project is refused (`check_target`).
Both jobs publish through one context manager:

    with publishing_run(folder, "preprocess", force=False, warn=print) as run:
        ...                                 # write into run.path
        run.publish(summary)                # or run.keep_unpublished(): kept for inspection

Readers keep using the documented globs:

    resolve("OUTPUT/train-*.csv")   # the published run's train shards, each checked against the manifest:
                                    # ['OUTPUT/run-20261130T182400.123456Z-1a2b3c/train-00000-of-00001.csv']

One run at a time per folder: `OutputLock` (local: flock on OUTPUT/_LOCK.json,
released by the kernel when its process dies, so a killed run's lock is taken
over; gs://: an object created with if-generation-match=0). A local reader holds a
`ReadLease` (a shared flock on the marker of the run it reads) and a publishing run
keeps a leased old run folder until the next run finds it free.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from taxifare_core import storage

SUMMARY_FILE = "summary.json"
LOCK_FILE = "_LOCK.json"
MARKER_FILE = "_RUN.json"
RUN_PREFIX = "run-"
MANIFEST_KEY = "output"
BEAM_TEMP_PREFIX = "beam-temp-"
_WILDCARDS = "*?["
# A run id: its UTC start to the microsecond (so names sort in start order), then random hex.
RUN_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# Run folder names of this module, today's and those before microseconds (still read and tidied).
_RUN_NAME = re.compile(r"^run-\d{8}T\d{6}(\.\d{6})?Z-[0-9a-f]{6}$")
# A manifest's file: RUN/NAME, one level, no way out of the output folder.
_MANIFEST_FILE = re.compile(r"^[^/.][^/]*/[^/]+$")


class IncompleteOutputError(ValueError):
    """An output folder's files do not match its manifest (or no run of it ever finished): one line."""


class OutputUsageError(ValueError):
    """An --output the job refuses before any work (a file, someone else's folder, unwritable, locked): one line."""


class OutputLockedError(OutputUsageError):
    """Another live run holds the output folder's lock: one line."""


def run_id() -> str:
    """A fresh run's name, the one naming rule of the project: <UTC start, microseconds>Z-<6 random hex digits>.

    Registry runs are named this way; an output folder's run folders are `run-` + it.
    """
    return f"{datetime.now(UTC).strftime(RUN_TIME_FORMAT)}-{secrets.token_hex(3)}"


def is_finished(run_dir: str, closing_file: str) -> bool:
    """The one rule for a finished run: the file it writes last, once all else is whole, is in its folder.

    A registry run's closing file is its metrics.json; an output run's is its own
    summary.json (written when its counts are in; published or kept for inspection).
    """
    return storage.exists(storage.join(run_dir, closing_file))


def new_run_name() -> str:
    """A fresh, unique run folder name in an output folder: run-<run_id()>."""
    return RUN_PREFIX + run_id()


def _split(pattern: str) -> tuple[str, str]:
    """A glob -> (its folder, its file-name pattern)."""
    folder, _, name = str(pattern).rstrip("/").rpartition("/")
    return folder, name


def read_manifest(folder: str) -> dict | None:
    """The published manifest ({"run", "files"}) of an output folder; None when none was published."""
    path = storage.join(folder, SUMMARY_FILE)
    if not storage.isfile(path):
        return None
    try:
        summary = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError):
        raise IncompleteOutputError(
            f"{path} is not valid JSON: the output in {folder} is unusable; re-run the job that writes it"
        ) from None
    if isinstance(summary, dict) and MANIFEST_KEY not in summary:
        return None  # a summary.json of the layout before manifests: no run published
    manifest = summary.get(MANIFEST_KEY) if isinstance(summary, dict) else None
    if not _is_manifest(manifest):
        raise IncompleteOutputError(
            f"{path} is not a summary this project writes (no valid manifest): the output "
            f"in {folder} is unusable; re-run the job that writes it"
        )
    return manifest


def _is_manifest(manifest) -> bool:
    """True for {"run": "run-...", "files": {"RUN/NAME": bytes, ...}} (and an optional "kind")."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("run"), str):
        return False
    files = manifest.get("files")
    return isinstance(files, dict) and all(
        isinstance(rel, str)
        and _MANIFEST_FILE.match(rel)
        and ".." not in rel
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        for rel, size in files.items()
    )


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
                "re-run the job that writes it"
            ) from None
        if found != files[rel]:
            raise IncompleteOutputError(
                f"incomplete output in {folder}: {rel} has {found:,} bytes, summary.json says {files[rel]:,}; "
                "re-run the job that writes it"
            )


CSV_SUFFIX, PARQUET_SUFFIX = ".csv", ".parquet"


def _matching(manifest: dict, name: str) -> list[str]:
    """The manifest's files (relative paths, sorted) whose file name matches the glob `name`."""
    return sorted(rel for rel in manifest["files"] if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], name))


def resolve(pattern: str) -> list[str] | None:
    """The published files a glob names, checked against the manifest; None when its folder has no manifest.

    `OUTPUT/train-*.csv` matches the file names of the published run's files
    (wherever they live under OUTPUT), so documented globs keep working; when no
    file matches a `*.csv` glob, its `*.parquet` twin is tried (Parquet shards).
    A glob whose folder part has wildcards is not resolved (None).
    """
    folder, name = _split(pattern)
    if not folder or any(ch in folder for ch in _WILDCARDS):
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    names = _matching(manifest, name)
    if not names and name.endswith(CSV_SUFFIX):
        # A run that wrote Parquet shards (--shard_format parquet): the documented CSV globs name them.
        names = _matching(manifest, name[: -len(CSV_SUFFIX)] + PARQUET_SUFFIX)
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
        kept = sum(is_finished(storage.join(folder, name), SUMMARY_FILE) for name in runs)
        why = (
            f"{kept} kept unpublished for inspection, the others failed or are still writing"
            if kept
            else "a run failed or is still writing"
        )
        return (
            f"no complete output in {folder}: {len(runs)} run folder(s) but no published summary.json "
            f"({why}); re-run the job that writes it"
        )
    return None


def check_kind(folder: str, manifest: dict | None, kind: str) -> None:
    """OutputUsageError (one line) when the folder publishes another job's output.

    For example predictions into processed data.
    """
    found = (manifest or {}).get("kind")
    if found and found != kind:
        raise OutputUsageError(f"output {folder} holds a {found} output, not a {kind} one: pass another --output")


def publish(
    folder: str, run_name: str, summary: dict, carried: dict[str, int] | None = None, kind: str | None = None
) -> dict:
    """Make run_name the folder's output: write OUTPUT/summary.json (with the manifest) in one step.

    `carried` files (of an older run, e.g. a raw cache a CSV run read) stay listed;
    `kind` names the job ("preprocess", "predict"). Returns the summary as written.
    """
    files = {**(carried or {}), **run_files(folder, run_name)}
    files.pop(f"{run_name}/{SUMMARY_FILE}", None)
    files.pop(f"{run_name}/{MARKER_FILE}", None)
    manifest = {"run": run_name, **({"kind": kind} if kind else {}), "files": dict(sorted(files.items()))}
    published = {**summary, MANIFEST_KEY: manifest}
    text = json.dumps(published, indent=2) + "\n"
    storage.write_text(storage.join(folder, run_name, SUMMARY_FILE), text)
    storage.write_text(storage.join(folder, SUMMARY_FILE), text)  # the one step that publishes
    return published


def is_marked_run(folder: str, name: str) -> bool:
    """True for a run folder this project created: named like one, with its marker inside.

    Also a folder of today's exact name holding nothing but an interrupted marker write
    (a run killed between making its folder and marking it): removing it loses nothing.
    """
    if not _RUN_NAME.match(name):
        return False
    path = storage.join(folder, name)
    if storage.isfile(storage.join(path, MARKER_FILE)):
        return True
    return (
        "." in name
        and storage.isdir(path)
        and all(entry.startswith(f"{MARKER_FILE}.tmp-") for entry in storage.listdir(path))
    )


def _published_runs(manifest: dict | None) -> set[str]:
    """The run folders a manifest names (its own run and the ones its files live in)."""
    return _referenced_runs(manifest) | ({manifest["run"]} if manifest else set())


def tidy(folder: str, manifest: dict, previous: dict | None) -> tuple[list[str], list[str]]:
    """After publishing `manifest`: remove the run folders this project provably wrote that it no longer names.

    Those are the runs the `previous` manifest named and marked run folders (failed,
    killed or kept-for-inspection runs). Nothing else is touched: files of other
    programs, unmarked folders that merely look like runs. A run folder a reader
    holds (`ReadLease`) stays for the next run to remove. Call while holding the
    folder's lock. Returns (names removed, warning lines); a removal that fails is a
    warning, not an error: the new run is published.
    """
    keep = _published_runs(manifest)
    candidates = (
        _published_runs(previous) | {name for name in storage.listdir(folder) if is_marked_run(folder, name)}
    ) - keep
    removed, warnings = [], []
    for name in sorted(candidates):
        path = storage.join(folder, name)
        if not storage.isdir(path):
            continue
        lease = _exclusive(storage.join(path, MARKER_FILE))
        if lease is False:
            warnings.append(f"kept {path}: a reader is still using it (the next run removes it)")
            continue
        try:
            storage.remove_tree(path)
            removed.append(name)
        except OSError as error:
            warnings.append(
                f"could not remove the old run folder {path} "
                f"({getattr(error, 'strerror', None) or error}); the new run is published: "
                "remove it by hand"
            )
        finally:
            if lease is not None and lease is not False:
                os.close(lease)
    return removed, warnings


def remove_beam_temp(folder: str) -> None:
    """Delete beam-temp-* folders directly under `folder` (a failed write's leftovers)."""
    if storage.isdir(folder):
        for name in storage.listdir(folder):
            if name.startswith(BEAM_TEMP_PREFIX):
                storage.remove_tree(storage.join(folder, name))


# --- refusing a folder that is not the job's to write -----------------------------------


def _own_entry(folder: str, name: str) -> bool:
    """True for what a job of this project leaves in an output folder."""
    return (
        name in (LOCK_FILE, SUMMARY_FILE)
        or is_marked_run(folder, name)
        or bool(re.fullmatch(r"summary\.json\.tmp-\d+", name))
    )


def foreign_entries(folder: str) -> list[str]:
    """What in `folder` shows it was never an output of this project (empty when it is one, or empty).

    An output is a folder with a published manifest or a marked run folder; any
    other non-empty folder is someone else's.
    """
    if not storage.isdir(folder):
        return []
    names = storage.listdir(folder)
    try:
        published = read_manifest(folder) is not None
    except IncompleteOutputError:
        published = False
    if published or any(is_marked_run(folder, name) for name in names):
        return []
    return [name for name in names if not _own_entry(folder, name)]


def _special_folder(folder: str) -> str | None:
    """'the root folder', 'a home folder' or 'the current folder' when a local `folder` is one."""
    if storage.is_remote(folder):
        return None
    real = os.path.realpath(os.path.expanduser(folder))
    named = {
        os.path.realpath(os.path.expanduser("~")): "a home folder",
        os.path.realpath(os.getcwd()): "the current folder",
        os.path.realpath(os.sep): "the root folder",
    }
    if os.environ.get("HOME"):
        named.setdefault(os.path.realpath(os.environ["HOME"]), "a home folder")
    return named.get(real)


def check_target(folder: str, force: bool = False) -> None:
    """OutputUsageError (one line) when `folder` is not a place to publish a run.

    Refused: a file; the root, a home or the current folder (always); a non-empty
    folder that never held an output of this project, unless `force` (then the run
    is written beside those files, which are never touched).
    """
    if storage.isfile(folder):
        raise OutputUsageError(f"output {folder} is a file, not a folder: pass another --output")
    special = _special_folder(folder)
    if special:
        raise OutputUsageError(
            f"output {folder} is {special}: pass a folder of its own for the job's files (e.g. a new sub-folder)"
        )
    foreign = foreign_entries(folder)
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputUsageError(
            f"output {folder} holds files this project did not write ({shown}): pass a new or "
            "empty folder, or --force to write beside them (they are never removed)"
        )


def check_output_folder(folder: str) -> None:
    """OutputUsageError (one line) when the output folder cannot be made or written (a probe file is created)."""
    if storage.isfile(folder):
        raise OutputUsageError(f"output {folder} is a file, not a folder: pass another --output")
    try:
        storage.check_writable(folder)
    except storage.NotWritableError as error:
        raise OutputUsageError(f"output {error}: pass another --output") from None


# --- one way to publish -----------------------------------------------------------------


class RunFolder:
    """The run a `publishing_run` block writes: OUTPUT/run-<id>/ (`path`), marked as this project's.

    `previous` is the manifest published before (None when none, or unreadable).
    End the block with `publish(summary)`, or `keep_unpublished()` to leave the
    run folder for inspection; a block that does neither, or raises, removes it.
    """

    def __init__(self, folder: str, kind: str, previous: dict | None):
        self.folder, self.kind, self.previous = folder, kind, previous
        self.name = new_run_name()
        self.path = storage.join(folder, self.name)
        self.published: dict | None = None
        self.kept = False

    def create(self) -> None:
        """Make the run folder and write its marker first: from then on it is provably this project's."""
        storage.makedirs(self.path)
        marker = {
            "kind": self.kind,
            "run": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        storage.write_text(storage.join(self.path, MARKER_FILE), json.dumps(marker) + "\n")

    def publish(self, summary: dict, carried: dict[str, int] | None = None) -> dict:
        """Publish the run (`publish`); returns the summary as written."""
        self.published = publish(self.folder, self.name, summary, carried, self.kind)
        return self.published

    def keep_unpublished(self) -> None:
        """Leave the run folder unpublished, for inspection (the next run into the folder removes it)."""
        self.kept = True


def _stderr(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def previous_manifest(folder: str) -> dict | None:
    """The published manifest, None when none or unreadable (an unreadable one publishes nothing worth keeping)."""
    try:
        return read_manifest(folder)
    except IncompleteOutputError:
        return None


@contextmanager
def publishing_run(
    folder: str, kind: str, force: bool = False, warn: Callable[[str], None] = _stderr
) -> Iterator[RunFolder]:
    """Write one run of a job into `folder` crash-safe, then publish it and tidy up.

    Before the block (OutputUsageError, one line, nothing touched): the folder must
    be a folder, not the root / a home / the current one, an output of this project
    (or empty, or `force`), writable (a probe file), free (its lock) and not hold
    another job's output. The block writes into `run.path` and calls `run.publish`;
    only then are the runs this one replaces removed (`tidy`; failures are warnings).
    On an exception the unfinished run folder is removed (unless kept) and the
    previous output stays as it was. `warn` gets one line per warning.
    """
    check_target(folder, force)
    check_output_folder(folder)
    lock = OutputLock(folder).acquire()
    try:
        if lock.warning:
            warn(lock.warning)
        previous = previous_manifest(folder)
        check_kind(folder, previous, kind)
        run = RunFolder(folder, kind, previous)
        try:
            run.create()
            yield run
        except BaseException:
            if not run.kept:
                _remove_quietly(run.path)
            raise
        if run.published is None:
            if not run.kept:
                _remove_quietly(run.path)
            return
        _, warnings = tidy(folder, run.published[MANIFEST_KEY], previous)
        for line in warnings:
            warn(line)
    finally:
        lock.release()


def _remove_quietly(path: str) -> None:
    """Remove an unfinished run folder on the way out of a failure, never hiding that failure."""
    try:
        storage.remove_tree(path)
    except OSError:
        pass


# --- readers' leases ----------------------------------------------------------------------


def _exclusive(marker: str) -> int | bool | None:
    """An fd holding an exclusive flock on a local run marker; False when a reader holds it; None: no lease there."""
    if storage.is_remote(marker):
        return None
    import fcntl

    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd


class ReadLease:
    """A reader's claim on the run folders its files live in: a publishing run keeps them while it is held.

        lease = ReadLease(paths)
        if lease.acquire():      # False: a run folder went away meanwhile; resolve the glob again
            ...read paths...
            lease.release()

    Local run folders with a marker only (a shared flock on the marker); other
    paths are read without a lease.
    """

    def __init__(self, paths: list[str]):
        self.paths = list(paths)
        self._fds: list[int] = []

    def acquire(self) -> bool:
        """Take the shared locks, then check every file is still there; False (nothing held) when one is gone."""
        import fcntl

        folders = sorted({path.rsplit("/", 1)[0] for path in self.paths if not storage.is_remote(path)})
        for run_dir in folders:
            marker = storage.join(run_dir, MARKER_FILE)
            try:
                fd = os.open(marker, os.O_RDONLY)
            except FileNotFoundError:
                if _RUN_NAME.match(run_dir.rsplit("/", 1)[-1]) and not os.path.isdir(run_dir):
                    self.release()
                    return False
                continue  # no marker: a hand-made folder or an older run, read without a lease
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._fds.append(fd)
        if not all(storage.exists(path) for path in self.paths):
            self.release()
            return False
        return True

    def release(self) -> None:
        """Drop the shared locks."""
        while self._fds:
            os.close(self._fds.pop())

    def __del__(self):
        self.release()


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
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join(sys.argv)[:300],
        }

    def _busy(self, info: dict) -> OutputLockedError:
        return OutputLockedError(
            f"output {self.folder} is being written by another run ({_holder_text(info)}); wait or use another --output"
        )

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
            if (
                info.get("host") == self.info["host"]
                and isinstance(info.get("pid"), int)
                and not _pid_alive(info["pid"])
            ):
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
