"""Run a local BigQuery emulator (`local-bigquery`, on DuckDB) and load rides into it.

The emulator needs Python 3.13, so it lives in its own virtual environment,
.venv-bqemu/ beside the project's .venv/, made on first use from the pins in
scripts/bigquery_emulator-requirements.txt (PyPI only; DuckDB's extensions come
from PyPI packages too, so it works offline).

    python scripts/bigquery_emulator.py install          # make .venv-bqemu/ (once)
    python scripts/bigquery_emulator.py start            # prints HOST:PORT, keeps a pid file
    python scripts/bigquery_emulator.py load --emulator 127.0.0.1:PORT --rows 1000
    python -m pipelines.preprocess --source bigquery --bigquery_emulator 127.0.0.1:PORT
    python scripts/bigquery_emulator.py stop             # by the pid file's PID
    python scripts/bigquery_emulator.py start --gcs_bucket my-bucket   # plus a gs:// emulator

The REST API listens on PORT and the Storage Read API (gRPC) on PORT + 10, the
convention pipelines.bigquery_emulator follows. Set BQEMU_PYTHON to use another
Python 3.13 interpreter. Bad flags end with one error line and exit code 2.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Runnable from a checkout without installing the package.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.api_core.exceptions import GoogleAPIError  # noqa: E402

from pipelines.bigquery_emulator import DEFAULT_GRPC_PORT_OFFSET, parse_host_port  # noqa: E402
from taxifare_core import contract  # noqa: E402

VENV_DIR = ROOT / ".venv-bqemu"
REQUIREMENTS = Path(__file__).with_name("bigquery_emulator-requirements.txt")
# Extensions local-bigquery loads, installed into DuckDB from their PyPI packages.
DUCKDB_EXTENSIONS = ("ducklake", "spatial", "icu", "avro")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DATA_DIR = contract.local_data_path() / "bigquery_emulator"
PID_FILE_NAME = "emulator.pid"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
# BigQuery column types of the raw rides, from the contract's dtypes.
BQ_TYPES = {"string": "STRING", "float32": "FLOAT64", "int16": "INT64", "datetime64[ns, UTC]": "TIMESTAMP"}


class EmulatorError(RuntimeError):
    """The emulator cannot be installed, started or reached; the message says why."""


@dataclass(frozen=True)
class Emulator:
    """A running emulator process."""

    host: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path

    @property
    def host_port(self) -> str:
        """HOST:PORT of the REST API, the value of --bigquery_emulator."""
        return f"{self.host}:{self.port}"


# --- the emulator's virtual environment --------------------------------------


def python313_candidates() -> list[str]:
    """Where a Python 3.13 may be, in order: $BQEMU_PYTHON, python3.13 on PATH, pyenv's 3.13
    (`pyenv prefix 3.13`, then every $PYENV_ROOT/versions/3.13*, newest first)."""
    candidates = [os.environ["BQEMU_PYTHON"]] if os.environ.get("BQEMU_PYTHON") else []
    candidates.append("python3.13")
    if shutil.which("pyenv"):
        try:
            done = subprocess.run(["pyenv", "prefix", "3.13"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0:
            prefixes = [prefix for prefix in done.stdout.strip().split(":") if prefix]
            candidates += [str(Path(prefix) / "bin" / "python3.13") for prefix in prefixes]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")), reverse=True)
    return candidates


def find_python313() -> str:
    """A Python 3.13 interpreter from python313_candidates() that really runs."""
    for candidate in python313_candidates():
        found = shutil.which(candidate)
        if found and _is_python313(found):
            return found
    raise EmulatorError(
        "the BigQuery emulator needs Python 3.13 (local-bigquery requires >=3.13,<3.14) and none "
        "was found: install it (e.g. `pyenv install 3.13.0`) or set BQEMU_PYTHON"
    )


def _is_python313(executable: str) -> bool:
    """True when executable runs and is Python 3.13 (a pyenv shim may exist yet fail)."""
    try:
        done = subprocess.run([executable, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "(3, 13)"


def _requirements_digest() -> str:
    """Hash of the pins: a venv made from other pins is refreshed."""
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def _run(command: list[str], what: str) -> None:
    """Run a setup command; on failure raise with the tail of its output."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise EmulatorError(f"{what} failed (exit {done.returncode}): {tail[-1] if tail else ''}\n"
                            + "\n".join(tail))


def ensure_venv(venv_dir: Path = VENV_DIR, log=print) -> Path:
    """Create or refresh the emulator's venv when needed; return its local-bigquery executable."""
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / ".installed"
    digest = _requirements_digest()
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == digest):
        interpreter = find_python313()
        log(f"creating the BigQuery emulator's venv at {venv_dir} with {interpreter} (about 30 s)")
        if not python.exists():
            _run([interpreter, "-m", "venv", str(venv_dir)], "creating the venv")
        _run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
             f"pip install -r {REQUIREMENTS.name}")
        stamp.write_text(digest + "\n")
    # DuckDB keeps extensions under ~/.duckdb, which may be gone while the venv is cached.
    _run([str(python), "-c", "import duckdb_extensions as d\n"
          f"for name in {DUCKDB_EXTENSIONS!r}: d.import_extension(name)"],
         "installing DuckDB's extensions from their PyPI packages")
    return venv_dir / "bin" / "local-bigquery"


# --- the server ---------------------------------------------------------------


def _port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a bind test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port P with P and P + 10 (gRPC) free on host."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port + DEFAULT_GRPC_PORT_OFFSET < 65536 and _port_is_free(host, port + DEFAULT_GRPC_PORT_OFFSET):
            return port
    raise EmulatorError(f"found no free pair of ports (P, P + {DEFAULT_GRPC_PORT_OFFSET}) on {host}")


def datasets_url(host_port: str, project: str = contract.BQ_PROJECT) -> str:
    """REST URL listing a project's datasets: the readiness probe."""
    return f"http://{host_port}/bigquery/v2/projects/{project}/datasets"


def is_ready(host_port: str) -> bool:
    """True when a real API call (listing datasets) succeeds."""
    try:
        with urllib.request.urlopen(datasets_url(host_port), timeout=5) as response:
            return response.status == 200 and "datasets" in json.load(response)
    except (OSError, ValueError):
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of the emulator's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _launch(command: list[str], host_port: str, ready, data_dir: Path, name: str, timeout: float) -> Emulator:
    """Start a server in the background and wait until ready(host_port); stop it if it never is."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        # Its own session: a Ctrl-C meant for the caller does not kill it half-way.
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    host, port = parse_host_port(host_port)
    server = Emulator(host, port, process.pid, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while not ready(host_port):
        if process.poll() is not None:
            raise EmulatorError(f"the {name} exited with code {process.returncode} "
                                f"(log: {log_path}):\n{_log_tail(log_path)}")
        if time.monotonic() > deadline:
            stop(server.pid)
            raise EmulatorError(f"the {name} did not answer within {timeout:.0f} s "
                                f"(log: {log_path}):\n{_log_tail(log_path)}")
        time.sleep(0.2)
    return server


def start(
    data_dir: Path = DEFAULT_DATA_DIR,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    log=print,
) -> Emulator:
    """Start the BigQuery emulator in the background and wait until a real API call succeeds."""
    executable = ensure_venv(log=log)
    port = port or free_port(host)
    data_dir = Path(data_dir)
    command = [
        str(executable), "serve", "--host", host, "--port", str(port),
        "--grpc-port", str(port + DEFAULT_GRPC_PORT_OFFSET),
        "--project", contract.BQ_PROJECT, "--dataset", contract.BQ_DATASET,
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    return _launch(command, f"{host}:{port}", is_ready, data_dir, "bigquery_emulator", timeout)


def storage_is_ready(host_port: str) -> bool:
    """True when the GCS emulator lists buckets."""
    try:
        with urllib.request.urlopen(f"http://{host_port}/storage/v1/b?project=local", timeout=5) as response:
            return response.status == 200 and "kind" in json.load(response)
    except (OSError, ValueError):
        return False


def start_storage(
    data_dir: Path,
    bucket: str,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    log=print,
) -> Emulator:
    """Start a GCS emulator (gcp-storage-emulator) holding `bucket`; point STORAGE_EMULATOR_HOST at it."""
    executable = ensure_venv(log=log).with_name("gcp-storage-emulator")
    port = port or free_port(host)
    data_dir = Path(data_dir)
    command = [str(executable), "--data-dir", str(data_dir / "gcs"), "start", "--host", host,
               "--port", str(port), "--default-bucket", bucket, "--quiet"]
    return _launch(command, f"{host}:{port}", storage_is_ready, data_dir, "storage_emulator", timeout)


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie child is reaped and counts as gone)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:  # not our child: ask the kernel instead
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the emulator by PID (SIGTERM, then SIGKILL); False if it was not running."""
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.1)
    return True


# --- loading rides --------------------------------------------------------------


def raw_schema(with_key: bool = True):
    """BigQuery schema of the raw rides table (CONTRACT.md section 1)."""
    from google.cloud import bigquery

    columns = contract.RAW_COLUMNS_WITH_KEY if with_key else contract.RAW_COLUMNS
    return [bigquery.SchemaField(name, BQ_TYPES[contract.RAW_DTYPES[name]]) for name in columns]


def client(host_port: str, project: str = contract.BQ_PROJECT):
    """A google-cloud-bigquery client on the emulator, with anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    host, port = parse_host_port(host_port)
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": f"http://{host}:{port}"})


def load_rides(host_port: str, rides, table: str, project: str = contract.BQ_PROJECT) -> int:
    """Replace `dataset.table` of `project` with the rides DataFrame; return its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    if not is_ready(host_port):
        raise EmulatorError(f"no BigQuery emulator answers on {host_port} (start one with `start`)")
    bq = client(host_port, project)
    dataset, _, _ = table.partition(".")
    bq.create_dataset(f"{project}.{dataset}", exists_ok=True)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rides, preserve_index=False), buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        schema=raw_schema(contract.KEY_COLUMN in rides.columns),
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    bq.load_table_from_file(buffer, f"{project}.{table}", job_config=config).result()
    return bq.get_table(f"{project}.{table}").num_rows


# --- command line -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not usage plus a line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _host_port(text: str) -> str:
    """argparse type: HOST:PORT."""
    try:
        parse_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = _Parser(prog="bigquery_emulator.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("install", help="create or refresh .venv-bqemu/ (Python 3.13, pinned packages)")
    start_cmd = commands.add_parser("start", help="start the emulator in the background; prints HOST:PORT")
    start_cmd.add_argument("--gcs_bucket", default=None,
                           help="also start a Cloud Storage emulator holding this bucket; prints the "
                           "STORAGE_EMULATOR_HOST to export for gs:// paths")
    start_cmd.add_argument("--port", type=int, default=None,
                           help=f"REST port (gRPC is PORT + {DEFAULT_GRPC_PORT_OFFSET}; default: a free one)")
    stop_cmd = commands.add_parser("stop", help="stop the emulator started by `start`, by its PID")
    status_cmd = commands.add_parser("status", help="say whether the emulator of the pid file answers")
    load_cmd = commands.add_parser(
        "load", help="load generated dirty rides (generate_rides) into a table, replacing it")
    load_cmd.add_argument("--emulator", type=_host_port, required=True, help="HOST:PORT printed by `start`")
    load_cmd.add_argument("--rows", type=int, default=1000, help="number of rides (default %(default)s)")
    load_cmd.add_argument("--seed", type=int, default=42, help="generator seed (default %(default)s)")
    load_cmd.add_argument("--table", default=f"{contract.BQ_DATASET}.raw_1k",
                          help="DATASET.TABLE in project %s (default %%(default)s)" % contract.BQ_PROJECT)
    for command in (start_cmd, stop_cmd, status_cmd):
        command.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR,
                             help="emulator's storage, log and pid file (default %(default)s)")
    return parser.parse_args(argv)


def _read_pid_file(data_dir: Path) -> dict | None:
    """The pid file's content, or None when there is none."""
    try:
        return json.loads((data_dir / PID_FILE_NAME).read_text())
    except (OSError, ValueError):
        return None


def main(argv=None) -> int:
    """Run one command; errors are one line and exit code 2."""
    args = parse_args(argv)
    try:
        if args.command == "install":
            print(f"ready: {ensure_venv()}")
        elif args.command == "start":
            running = _read_pid_file(args.data_dir)
            if running and _alive(running["pid"]) and is_ready(running["host_port"]):
                print(running["host_port"])
                return 0
            emulator = start(args.data_dir, port=args.port, log=lambda line: print(line, file=sys.stderr))
            pids = [emulator.pid]
            if args.gcs_bucket:
                storage = start_storage(args.data_dir, args.gcs_bucket, log=lambda line: print(line, file=sys.stderr))
                pids.append(storage.pid)
                print(f"export STORAGE_EMULATOR_HOST=http://{storage.host_port}   # gs://{args.gcs_bucket}",
                      file=sys.stderr)
            (args.data_dir / PID_FILE_NAME).write_text(
                json.dumps({"pid": emulator.pid, "pids": pids, "host_port": emulator.host_port}))
            print(f"BigQuery emulator pid {emulator.pid}, log {emulator.log_path}", file=sys.stderr)
            print(emulator.host_port)
        elif args.command == "stop":
            running = _read_pid_file(args.data_dir)
            stopped = bool(running) and any([stop(pid) for pid in running.get("pids", [running["pid"]])])
            (args.data_dir / PID_FILE_NAME).unlink(missing_ok=True)
            print("stopped" if stopped else "not running")
        elif args.command == "status":
            running = _read_pid_file(args.data_dir)
            ok = bool(running) and is_ready(running["host_port"])
            print(f"running on {running['host_port']}" if ok else "not running")
            return 0 if ok else 1
        elif args.command == "load":
            from taxifare_core.generate import generate_rides

            started = time.monotonic()
            rides = generate_rides(args.rows, seed=args.seed)
            count = load_rides(args.emulator, rides, args.table)
            print(f"loaded {count} rides into {contract.BQ_PROJECT}.{args.table} "
                  f"in {time.monotonic() - started:.1f} s")
    except (EmulatorError, ValueError, OSError, GoogleAPIError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"bigquery_emulator.py: error: {first_line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
