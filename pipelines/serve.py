"""The model in production: an HTTP prediction service with the course's `/predict` contract (FastAPI on uvicorn).

    python -m pipelines.serve                       # the local registry's production run, 127.0.0.1:8000
    python -m pipelines.serve --registry gs://bucket/training_outputs --run 20261126T091500.123456Z --port 8080
    make serve ARGS="--port 8080"

    curl 'http://127.0.0.1:8000/predict?pickup_datetime=2014-07-06%2019:18:00&pickup_longitude=-73.950655&pickup_latitude=40.783282&dropoff_longitude=-73.984365&dropoff_latitude=40.769802&passenger_count=1'
    -> {"fare": 9.87...}

Endpoints (see docs/serving.md):

    GET  /predict   one ride as query parameters -> {"fare": F}; 422 {"detail": "cannot price this ride: ..."}
    POST /predict   a JSON list of rides -> {"fares": [F or null, ...], "errors": [{"index": i, "reason": "..."}]}
    GET  /health    {"status": "ok", "run": NAME}
    GET  /model     run name, when it was trained and loaded, rows, val MAE, baseline MAE

Without --run the service follows the registry's production run: a newly
promoted run is loaded in the background and swapped in (pipelines.serving_reload).

Connections (pipelines.serve_connections): one that sends no request head for --keep_alive_s
seconds is closed, at most --max_connections are open (a new one closes the longest idle),
a POST body must arrive within --body_timeout_s. A POST body is checked for size (its
Content-Length, then the bytes received) and ride count before it is parsed, and parsed and
priced in a worker thread. Ctrl-C (or SIGTERM), at start-up or while serving: one line, exit
130 (143).

A `pickup_datetime` without zone is New York local time; one ending in " UTC"
is UTC (taxifare_core.serving.service_rides). The model is loaded once at start-up and
priced by a numpy forward pass (taxifare_core.serving.forward), checked against Keras
at start-up; no Keras call per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime


def _exit_at_once(signum, frame) -> None:
    """Signal handler while the modules load: nothing is open or written yet, so one line and out."""
    print(f"python -m pipelines.serve: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    os._exit(128 + signum)


# One BLAS thread (set before numpy loads, so only when run as the server): a POST's matrix
# products are small, and on a busy machine OpenBLAS's spinning threads made 10,000 rides
# 2-3x slower (measured: 68-82 ms against 27-37 ms on 2 shared cores).
if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Importing numpy, pandas and FastAPI takes seconds on a busy machine: Ctrl-C then is one line too.
    signal.signal(signal.SIGINT, _exit_at_once)
    signal.signal(signal.SIGTERM, _exit_at_once)

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from pipelines import serve_connections
from pipelines.cli import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    number_in,
    positive_float,
    positive_int,
    report_usage_error,
)
from pipelines.serving_reload import DEFAULT_RELOAD_SECONDS, LiveModel
from taxifare_core import contract, storage
from taxifare_core.serving import SERVING_COLUMNS, forward
from taxifare_core.serving.service_rides import prepare_json_rides, prepare_ride
from taxifare_core.training import registry

PROG = "python -m pipelines.serve"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
# Rides per POST: 10,000 are priced in well under half a second (docs/serving.md).
DEFAULT_MAX_RIDES = 10_000
# A JSON ride takes about 200 bytes; a body beyond this per ride is refused before it is read.
MAX_BYTES_PER_RIDE = 1_000
# A ride of six fields is six commas in a list (five inside, one after it); room for a few more
# fields. A body with more commas is refused before parsing: Python's JSON parser holds the GIL,
# so parsing a body of 50,000 rides, even in a thread, stalled every other request by 100-500 ms.
MAX_COMMAS_PER_RIDE = 12
# Connections: seconds to send a request head, most open at once, seconds to send a POST body.
DEFAULT_KEEP_ALIVE_S = 5.0
DEFAULT_MAX_CONNECTIONS = 1_000
DEFAULT_BODY_TIMEOUT_S = 30.0
# Seconds a stopping server waits for requests in flight before closing their connections.
GRACEFUL_SHUTDOWN_S = 10
EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
LOG = logging.getLogger("uvicorn.error")  # uvicorn's own log: one line each, on stderr
# The numpy pass must match Keras within this on the check rows (the bound), relative to the fare.
FORWARD_TOLERANCE = 1e-5
QUERY_PARAMETERS = [
    {"name": name, "in": "query", "required": True, "schema": {"type": "string"}, "description": text}
    for name, text in (
        (contract.TIME_COLUMN, 'New York local time, e.g. "2014-07-06 19:18:00" (UTC when it ends in " UTC")'),
        ("pickup_longitude", f"degrees, {contract.LONGITUDE_MIN} to {contract.LONGITUDE_MAX}"),
        ("pickup_latitude", f"degrees, {contract.LATITUDE_MIN} to {contract.LATITUDE_MAX}"),
        ("dropoff_longitude", f"degrees, {contract.LONGITUDE_MIN} to {contract.LONGITUDE_MAX}"),
        ("dropoff_latitude", f"degrees, {contract.LATITUDE_MIN} to {contract.LATITUDE_MAX}"),
        (contract.PASSENGER_COLUMN, "1 to 7"),
    )
]
METRICS_SHOWN = ("rows", "val_mae", "val_rmse", "baseline_mae", "val_rows", "chunks", "epochs", "seconds")


@dataclass(frozen=True)
class ServedModel:
    """The model being served: its run, the numpy pass and what /model reports."""

    run: str
    path: str
    net: forward.ForwardPass
    info: dict


class ModelLoadError(RuntimeError):
    """The model cannot be served (absent, unreadable, or its numpy pass disagrees with Keras)."""


class Stopped(BaseException):  # like KeyboardInterrupt: no `except Exception` in a library swallows it
    """SIGINT or SIGTERM arrived: the server stops with one line and exit code 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Refused(Exception):
    """A POST body refused before pricing: the HTTP status and the reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _check_rows(n_random: int = 64, seed: int = 0) -> np.ndarray:
    """Feature rows to compare numpy with Keras: the example ride's, then random rows in the contract's ranges."""
    example, _ = prepare_ride(contract.EXAMPLE_RIDE)
    rng = np.random.default_rng(seed)
    rows = np.zeros((n_random, contract.N_FEATURES), dtype=np.float32)
    rows[:, contract.COL_PASSENGERS] = rng.integers(0, 7, n_random) / contract.PASSENGER_SCALE
    for group in (
        contract.COLS_WEEKDAY,
        contract.COLS_MONTH,
        contract.COLS_PICKUP_DISTRICT,
        contract.COLS_DROPOFF_DISTRICT,
    ):
        rows[np.arange(n_random), group.start + rng.integers(0, group.stop - group.start, n_random)] = 1.0
    rows[:, contract.COL_DAYS] = rng.uniform(0, 1, n_random)
    angle = 2 * np.pi * rng.integers(0, 24, n_random) / 24
    rows[:, contract.COL_HOUR_SIN], rows[:, contract.COL_HOUR_COS] = np.sin(angle), np.cos(angle)
    rows[:, contract.COL_HAVERSINE] = rng.uniform(0, 0.3, n_random)
    rows[:, contract.COL_MANHATTAN] = rows[:, contract.COL_HAVERSINE] * rng.uniform(1, 1.4, n_random)
    return np.vstack([example, rows])


def _trained_at(run: str) -> str | None:
    """The run's start (its folder name) as ISO 8601 UTC, None if the name is not a timestamp."""
    try:
        stamp = datetime.strptime(run.split("-", 1)[0], registry.RUN_NAME_FORMAT)
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC).isoformat()


def _finite_or_none(value):
    """A metrics.json value for JSON: NaN and infinities (a run with no validation rows) become null."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def load_served_model(run: str | None = None, registry_dir: str | None = None) -> ServedModel:
    """Load a finished run once, export its numpy pass and check it against Keras.

    Raises registry.NoModelError when the registry has no (such) finished run,
    ModelLoadError when its model cannot be read or served.
    """
    path = registry.run_path(run, registry_dir)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    # UnreadableModelError names another run to use, also for a model of another input width or
    # a metrics.json that is not a JSON object (registry.check_usable_run).
    keras_model = registry.load_run_model(path)
    try:
        net = forward.from_keras(keras_model)
    except ValueError as error:  # a layer the numpy pass cannot reproduce
        raise ModelLoadError(f"cannot serve run {name}: {error}") from None
    rows = _check_rows()
    expected = np.asarray(keras_model(rows, training=False)).reshape(-1)
    # Relative to the fare (absolute under $1): Keras computes in float32, whose last bits on a $50
    # fare are worth several 1e-6, so a trained model missed an absolute 1e-5 by summation order alone.
    gap = float(np.max(np.abs(net(rows) - expected) / np.maximum(1.0, np.abs(expected))))
    if gap > FORWARD_TOLERANCE:
        raise ModelLoadError(
            f"the numpy forward pass of run {name} differs from Keras by {gap:.2e} (> {FORWARD_TOLERANCE})"
        )
    try:
        metrics = registry.read_json(storage.join(path, registry.METRICS_FILE))
    except (OSError, ValueError, storage.StorageError):
        metrics = {}  # the model alone is enough to serve; /model then says what is unknown
    if not isinstance(metrics, dict):  # a finished run's metrics.json is an object: load_run_model checked
        metrics = {}
    info = {
        "run": name,
        "path": path,
        "trained_at": _trained_at(name),
        **{key: _finite_or_none(metrics.get(key)) for key in METRICS_SHOWN},
        "forward_pass": "numpy",
        "forward_max_gap_vs_keras": gap,
    }
    return ServedModel(name, path, net, info)


def _json(payload, status: int = 200):
    """A JSON response built with the standard library (FastAPI's encoder walks every list item)."""
    return Response(json.dumps(payload, allow_nan=False), status_code=status, media_type="application/json")


def _refused(reason: str):
    """A single ride the model cannot price: 422 in the CLI's words."""
    return _json({"detail": f"cannot price this ride: {reason}", "reason": reason}, 422)


def create_app(served: ServedModel, max_rides: int = DEFAULT_MAX_RIDES, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
    """The FastAPI application serving one loaded model."""
    app = FastAPI(
        title="taxifare",
        description="WagonCab's taxi-fare model: the course's /predict contract.",
        version="1.0",
    )
    max_bytes = max_rides * MAX_BYTES_PER_RIDE
    max_commas = max_rides * MAX_COMMAS_PER_RIDE

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        """Any unexpected failure is one JSON line for that request; the worker keeps serving."""
        return _json({"detail": f"internal error: {type(error).__name__}: {error}"}, 500)

    @app.get("/predict", openapi_extra={"parameters": QUERY_PARAMETERS})
    async def predict_one(request: Request):
        """One ride as query parameters -> {"fare": F}; a ride the model cannot price -> 422 with the reason."""
        # The raw query, not declared parameters: FastAPI's per-parameter validation would cost
        # more than pricing the ride, and every refusal must be in the contract's words anyway.
        features, reason = prepare_ride(request.query_params)
        if reason is not None:
            return _refused(reason)
        return _json({"fare": float(served.net(features)[0])})

    @app.post("/predict")
    async def predict_many(request: Request):
        """A JSON list of rides -> {"fares": [...], "errors": [{"index": i, "reason": "..."}]}.

        A refused ride's fare is null.
        """
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return _too_large(f"the body has {int(declared):,} bytes")
        body = bytearray()
        try:
            async with asyncio.timeout(body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_bytes:
                        return _too_large(f"the body exceeds {max_bytes:,} bytes")
        except ClientDisconnect:
            client = f"{request.client[0]}:{request.client[1]}" if request.client else "a client"
            LOG.warning(
                "%s left during its POST /predict upload (%s bytes received): nothing priced", client, f"{len(body):,}"
            )
            return Response(status_code=400)  # nobody reads it: uvicorn drops it
        except TimeoutError:
            return _json(
                {
                    "detail": f"the body did not arrive within {body_timeout_s:g} s "
                    f"({len(body):,} bytes received): send it faster or in smaller batches"
                },
                408,
            )
        try:
            # Parsed and priced off the event loop (10,000 rides take tens of milliseconds).
            return _json(await run_in_threadpool(_read_and_price, body))
        except Refused as refused:
            return _json({"detail": refused.detail}, refused.status)

    def _read_and_price(body: bytearray) -> dict:
        """A POST body's answer; Refused when it is too many rides, not JSON, nested too deeply or not a list."""
        commas = body.count(b",")  # the work json.loads would do, bounded before it is done
        if commas > max_commas:
            raise Refused(
                413,
                _too_large_text(
                    f"the body holds {commas:,} commas, more than {max_rides:,} rides "
                    f"of up to {MAX_COMMAS_PER_RIDE} fields"
                ),
            )
        try:
            rides = json.loads(body)
        except RecursionError:
            raise Refused(422, "the body is nested too deeply: expected a JSON list of ride objects") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise Refused(422, f"the body is not JSON: {error}") from None
        if not isinstance(rides, list):
            raise Refused(
                422, "expected a JSON list of rides, each an object with the fields " + ", ".join(SERVING_COLUMNS)
            )
        if len(rides) > max_rides:
            raise Refused(413, _too_large_text(f"{len(rides):,} rides in one request"))
        try:
            return _price_many(rides)
        except RecursionError:  # a value nested just under the parser's limit, quoted in a reason
            raise Refused(422, "a ride's value is nested too deeply: expected numbers and text") from None

    def _price_many(rides: list) -> dict:
        prepared = prepare_json_rides(rides)
        fares: list = [None] * len(rides)
        if prepared.valid.any():
            for index, fare in zip(np.flatnonzero(prepared.valid).tolist(), served.net(prepared.features).tolist()):
                fares[index] = fare
        errors = [{"index": i, "reason": why} for i, why in enumerate(prepared.reasons) if why is not None]
        return {"fares": fares, "errors": errors}

    def _too_large_text(what: str) -> str:
        return f"{what}; the limit is {max_rides:,} rides ({max_bytes:,} bytes) per request: split the batch"

    def _too_large(what: str):
        return _json({"detail": _too_large_text(what)}, 413)

    @app.get("/health")
    async def health():
        """Liveness: the process is up with its model loaded."""
        return _json({"status": "ok", "run": served.run})

    @app.get("/model")
    async def model_info():
        """The served run: name, start time, rows, val and baseline MAE (from metrics.json)."""
        return _json({**served.info, "max_rides_per_request": max_rides})

    return app


def build_parser() -> argparse.ArgumentParser:
    """The service's flags."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Serve the registry's model over HTTP: GET/POST /predict, /health, /model.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--registry", default=str(contract.local_registry_path()), help="model registry folder (local or gs://)"
    )
    parser.add_argument(
        "--run", default=None, help="run folder name to serve (default: the production run, followed as it changes)"
    )
    parser.add_argument(
        "--reload_seconds",
        type=float,
        default=DEFAULT_RELOAD_SECONDS,
        help="how often to check for a newly promoted run (0: never; not with --run)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port; 0 picks a free one (the chosen port is printed)"
    )
    parser.add_argument(
        "--max_rides",
        type=positive_int,
        default=DEFAULT_MAX_RIDES,
        help="most rides accepted in one POST /predict (more: 413)",
    )
    parser.add_argument(
        "--keep_alive_s",
        type=positive_float,
        default=DEFAULT_KEEP_ALIVE_S,
        help="seconds a connection may stay open without sending a request (after connecting "
        "or after its previous answer); then the server closes it",
    )
    parser.add_argument(
        "--max_connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="most open connections; a new one at the limit closes the connection idle the "
        "longest, a request that finds them all busy gets 503",
    )
    parser.add_argument(
        "--body_timeout_s",
        type=positive_float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds a POST /predict body may take to arrive (slower: 408)",
    )
    parser.add_argument(
        "--access_log",
        action="store_true",
        help="log every request to stderr (off by default: a log line per request costs CPU)",
    )
    return parser


_port = number_in(int, 0, 65535, "0 to 65535", "port")  # argparse type: a TCP port


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket (so a busy port is our one-line error, and port 0 can be reported)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    return sock


def _raise_stopped(signum, frame) -> None:
    """Signal handler: SIGINT / SIGTERM become Stopped, reported by `main` as one line."""
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    """Load the model, then serve until interrupted; one-line errors with exit code 2, 130 / 143 when stopped."""
    args = build_parser().parse_args(argv)
    # From here on a signal is one line: during start-up (loading TensorFlow takes seconds) it
    # interrupts the load; while serving, uvicorn shuts down gracefully, then re-raises the
    # signal it caught into this handler.
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in EXIT_SIGNALS}
    try:
        return _serve(args)
    except (Stopped, KeyboardInterrupt) as stop:
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
        print(f"{PROG}: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        return EXIT_SIGNALS[signum]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(args: argparse.Namespace) -> int:
    """Load the model, listen, serve until a signal."""
    try:
        serve_connections.reserve_file_descriptors(args.max_connections)
        served = load_served_model(args.run, args.registry)
        sock = _listen(args.host, args.port)
    except (registry.NoModelError, ModelLoadError, storage.StorageError, OSError) as error:
        return report_usage_error(PROG, error)
    import uvicorn

    # TensorFlow and Keras leave millions of objects behind: frozen, the collector stops
    # walking them in its full passes, which would otherwise stall a request now and then.
    gc.collect()
    gc.freeze()
    host, port = sock.getsockname()[:2]
    live = LiveModel(
        served,
        lambda run: load_served_model(run, args.registry),
        args.registry,
        args.reload_seconds,
        follows_production=args.run is None,
    ).start()
    config = uvicorn.Config(
        create_app(live, args.max_rides, args.body_timeout_s),
        log_level="warning",
        access_log=args.access_log,
        lifespan="off",
        http=serve_connections.GuardedHttp,
        timeout_keep_alive=args.keep_alive_s,
        # uvicorn answers 503 from this many connections on; GuardedHttp keeps one below it when any is idle.
        limit_concurrency=args.max_connections + 1,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    print(
        f"serving run {served.run} on http://{host}:{port} (numpy forward pass; "
        f"up to {args.max_rides:,} rides per POST, {args.max_connections:,} connections; Ctrl-C stops)",
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
