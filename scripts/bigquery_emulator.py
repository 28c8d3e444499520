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
    python scripts/bigquery_emulator.py dying_run --read_method DIRECT_READ --kill_after 2
        # its own emulator, killed 2 s into a preprocess run's reading: how long the run takes to end

The REST API listens on PORT and the Storage Read API (gRPC) on PORT + 10, the
convention pipelines.local.bigquery_emulator follows. Set BQEMU_PYTHON to use another
Python 3.13 interpreter. Bad flags end with one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.api_core.exceptions import GoogleAPIError  # noqa: E402

from emulators.bigquery import DEFAULT_DATA_DIR, is_ready, load_rides, start  # noqa: E402
from emulators.gcs import start_storage  # noqa: E402
from emulators.processes import PID_FILE_NAME, EmulatorError, alive, stop  # noqa: E402
from emulators.python_env import ensure_venv  # noqa: E402
from pipelines.cli import OneLineErrorParser  # noqa: E402
from pipelines.local.bigquery_emulator import DEFAULT_GRPC_PORT_OFFSET, parse_host_port  # noqa: E402
from taxifare_core import contract  # noqa: E402
from taxifare_core.storage.outputs import LOCK_FILE  # noqa: E402


def _host_port(text: str) -> str:
    """argparse type: HOST:PORT."""
    try:
        parse_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = OneLineErrorParser(prog="bigquery_emulator.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    commands.add_parser("install", help="create or refresh .venv-bqemu/ (Python 3.13, pinned packages)")
    start_cmd = commands.add_parser("start", help="start the emulator in the background; prints HOST:PORT")
    start_cmd.add_argument(
        "--gcs_bucket",
        default=None,
        help="also start a Cloud Storage emulator holding this bucket; prints the "
        "STORAGE_EMULATOR_HOST to export for gs:// paths",
    )
    start_cmd.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"REST port (gRPC is PORT + {DEFAULT_GRPC_PORT_OFFSET}; default: a free one)",
    )
    stop_cmd = commands.add_parser("stop", help="stop the emulator started by `start`, by its PID")
    status_cmd = commands.add_parser("status", help="say whether the emulator of the pid file answers")
    load_cmd = commands.add_parser(
        "load", help="load generated dirty rides (generate_rides) into a table, replacing it"
    )
    load_cmd.add_argument("--emulator", type=_host_port, required=True, help="HOST:PORT printed by `start`")
    load_cmd.add_argument("--rows", type=int, default=1000, help="number of rides (default %(default)s)")
    load_cmd.add_argument("--seed", type=int, default=42, help="generator seed (default %(default)s)")
    load_cmd.add_argument(
        "--table",
        default=f"{contract.BQ_DATASET}.raw_1k",
        help=f"DATASET.TABLE in project {contract.BQ_PROJECT} (default %(default)s)",
    )
    dying_cmd = commands.add_parser(
        "dying_run",
        help="start an emulator with --rows rides, start a preprocess run on it, SIGKILL the "
        "emulator --kill_after s after the run's first job request; print how the run ended",
    )
    dying_cmd.add_argument("--read_method", choices=("DIRECT_READ", "EXPORT"), default="DIRECT_READ")
    dying_cmd.add_argument(
        "--kill_after",
        type=float,
        default=2.0,
        help="seconds after the run's first job request (default %(default)s); "
        "-1: no emulator at all (a port where nothing listens)",
    )
    dying_cmd.add_argument("--rows", type=int, default=300_000, help="rides in the table (default %(default)s)")
    dying_cmd.add_argument(
        "--limit",
        type=float,
        default=300.0,
        help="stop the run by its PID this many seconds after the kill (default %(default)s)",
    )
    dying_cmd.add_argument("--bigquery_timeout", type=float, default=None, help="passed to the run")
    for command in (start_cmd, stop_cmd, status_cmd):
        command.add_argument(
            "--data_dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help="emulator's storage, log and pid file (default %(default)s)",
        )
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
            if running and alive(running["pid"]) and is_ready(running["host_port"]):
                print(running["host_port"])
                return 0
            emulator = start(args.data_dir, port=args.port, log=lambda line: print(line, file=sys.stderr))
            pids = [emulator.pid]
            if args.gcs_bucket:
                storage = start_storage(args.data_dir, args.gcs_bucket, log=lambda line: print(line, file=sys.stderr))
                pids.append(storage.pid)
                print(
                    f"export STORAGE_EMULATOR_HOST=http://{storage.host_port}   # gs://{args.gcs_bucket}",
                    file=sys.stderr,
                )
            (args.data_dir / PID_FILE_NAME).write_text(
                json.dumps({"pid": emulator.pid, "pids": pids, "host_port": emulator.host_port})
            )
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
        elif args.command == "dying_run":
            import tempfile

            from emulators.bigquery import run_with_dying_emulator

            extra = ["--read_method", args.read_method]
            extra += ["--bigquery_timeout", str(args.bigquery_timeout)] if args.bigquery_timeout else []
            with tempfile.TemporaryDirectory(prefix="dying_run_") as workdir:
                run = run_with_dying_emulator(
                    Path(workdir), extra, None if args.kill_after < 0 else args.kill_after, args.rows, args.limit
                )
                lock = (run.output / LOCK_FILE).exists()
            ended = (
                f"exit {run.returncode}"
                if run.returncode is not None
                else f"still running, stopped after {args.limit:g} s"
            )
            print(
                f"{args.read_method}, emulator {'never there' if args.kill_after < 0 else 'killed'}: "
                f"{ended} {run.seconds:.1f} s after the {'start' if args.kill_after < 0 else 'kill'}, "
                f"lock {'left' if lock else 'released'}"
            )
            print("\n".join(run.stderr_lines[-2:]))
        elif args.command == "load":
            from taxifare_core.generate import generate_rides

            started = time.monotonic()
            rides = generate_rides(args.rows, seed=args.seed)
            count = load_rides(args.emulator, rides, args.table)
            print(f"loaded {count} rides into {contract.BQ_PROJECT}.{args.table} in {time.monotonic() - started:.1f} s")
    except (EmulatorError, ValueError, OSError, GoogleAPIError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"bigquery_emulator.py: error: {first_line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
