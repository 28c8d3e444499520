"""Load-test the prediction service on loopback: latency and throughput against the issue's targets.

    python scripts/bench_serve.py --tiny_model             # starts its own server on a tiny model
    python scripts/bench_serve.py --registry ~/.lewagon/mlops/training_outputs
    python scripts/bench_serve.py --url http://127.0.0.1:8000  # a server already running

Three cases, each bounded in requests and seconds:

    sequential  one client, single-ride GET /predict one after another   target p50 <= 3 ms, p99 <= 10 ms
    concurrent  16 clients (own keep-alive connections), GET /predict  target >= 500 req/s, p99 <= 100 ms
    batch       POST /predict of 10,000 rides                            target < 0.5 s per request

Server and load generator share the machine's cores, so the figures are
pessimistic for a server with cores of its own. The load generator is asyncio
+ aiohttp (about 150 us of client CPU per request, a quarter of `requests`'s),
so it does not eat the cores it is measuring. Rides are generated (the
contract's generator), with New York local times as the course's front-ends send them.
Prints p50 / p95 / p99 and throughput per case.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.cli import OneLineErrorParser, positive_float, positive_int
from scripts.jobs import serve_command, server_url, stop_process
from taxifare_core import contract, features, generate, parsing
from taxifare_core.cleaning import clean
from taxifare_core.training import registry

TARGETS = {
    "sequential": "p50 <= 3 ms, p99 <= 10 ms",
    "concurrent": ">= 500 req/s, p99 <= 100 ms",
    "batch": "< 500 ms per request",
}
START_TIMEOUT_S = 120


def ride_params(n: int, seed: int = 1) -> list[dict]:
    """`n` clean generated rides as the course's front-ends send them: text, New York local time, no zone."""
    raw = generate.generate_rides(int(n * 1.3) + 50, seed=seed)
    typed, reasons = parsing.parse_frame(raw)
    kept = clean(typed[reasons.isna()]).kept.head(n)
    local = features.local_times(kept[contract.TIME_COLUMN]).strftime("%Y-%m-%d %H:%M:%S")
    rides = []
    for when, (_, row) in zip(local, kept.iterrows()):
        ride = {column: f"{row[column]:.6f}" for column in contract.COORDINATE_COLUMNS}
        rides.append(
            {contract.TIME_COLUMN: when, **ride, contract.PASSENGER_COLUMN: str(int(row[contract.PASSENGER_COLUMN]))}
        )
    if len(rides) < n:
        rides = (rides * (n // max(len(rides), 1) + 1))[:n]
    return rides


def as_json_numbers(ride: dict) -> dict:
    """A ride as a JSON client sends it: coordinates and passenger count as numbers, the time as text."""
    return {
        **{column: float(ride[column]) for column in contract.COORDINATE_COLUMNS},
        contract.TIME_COLUMN: ride[contract.TIME_COLUMN],
        contract.PASSENGER_COLUMN: int(ride[contract.PASSENGER_COLUMN]),
    }


def tiny_registry(folder: Path) -> str:
    """A registry holding one briefly trained contract model (serving speed does not depend on the weights)."""
    from taxifare_core.training.model import build_model

    raw = generate.generate_rides(600, seed=2)
    typed, reasons = parsing.parse_frame(raw)
    rows = features.processed_rows(clean(typed[reasons.isna()]).kept)
    model = build_model(seed=1)
    model.fit(rows[:, :-1], rows[:, -1], batch_size=64, epochs=1, verbose=0)
    run_dir = registry.save_run(registry.new_run(str(folder)), model, {}, {"rows": len(rows)})
    registry.promote(registry.run_name(run_dir), str(folder))  # the service serves the production run
    return str(folder)


def start_server(registry_dir: str) -> tuple[subprocess.Popen, str]:
    """`python -m pipelines.serve` on a free loopback port; (process, base URL) once it answers /health."""
    process = subprocess.Popen(
        serve_command("--registry", registry_dir, "--port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = server_url(process, START_TIMEOUT_S)
    if not url:
        stop_process(process, timeout=15)
        raise SystemExit(f"bench_serve: error: the server did not start: {process.stderr.read().strip()}")
    return process, url


def percentiles(seconds: list[float]) -> dict:
    """p50 / p95 / p99 in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


async def _get(session: aiohttp.ClientSession, url: str, ride: dict) -> float:
    """One GET /predict; its latency in seconds (raises on a non-200 answer)."""
    sent = time.perf_counter()
    async with session.get(url + "/predict", params=ride) as response:
        body = await response.read()
    latency = time.perf_counter() - sent
    if response.status != 200:
        raise SystemExit(f"bench_serve: error: GET /predict answered {response.status}: {body[:200]!r}")
    return latency


async def sequential(url: str, rides: list[dict], max_requests: int, max_seconds: float) -> dict:
    """One client, one GET after another on a keep-alive connection."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        for ride in rides[:200]:  # warm-up: connection, caches
            await _get(session, url, ride)
        started = time.perf_counter()
        while len(latencies) < max_requests and time.perf_counter() - started < max_seconds:
            latencies.append(await _get(session, url, rides[len(latencies) % len(rides)]))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed, **percentiles(latencies)}


async def concurrent(url: str, rides: list[dict], clients: int, max_requests: int, max_seconds: float) -> dict:
    """`clients` clients, each with its own keep-alive connection, sending GETs back to back from a shared budget."""
    budget = iter(range(max_requests))
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession, stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            ticket = next(budget, None)
            if ticket is None:
                return
            latencies.append(await _get(session, url, rides[ticket % len(rides)]))

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(clients)]
    try:
        for session in sessions:  # connect every client before the clock starts
            await _get(session, url, rides[0])
        started = time.perf_counter()
        await asyncio.gather(*(client(session, started + max_seconds) for session in sessions))
        elapsed = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return {"requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed, **percentiles(latencies)}


async def batch(url: str, rides: list[dict], repeats: int) -> dict:
    """POST /predict of all `rides` at once, `repeats` times: from sending the body to the decoded answer."""
    latencies = []
    body = json.dumps(rides).encode()  # a client's own encoding is not the service's time
    async with aiohttp.ClientSession() as session:
        for _ in range(repeats):
            sent = time.perf_counter()
            async with session.post(
                url + "/predict", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = json.loads(await response.read())
            latencies.append(time.perf_counter() - sent)
            if response.status != 200 or answer["errors"] or len(answer["fares"]) != len(rides):
                raise SystemExit(f"bench_serve: error: the batch was not fully priced: {str(answer)[:300]}")
    return {
        "requests": repeats,
        "seconds": sum(latencies),
        "rate": len(rides) * repeats / sum(latencies),
        **percentiles(latencies),
    }


async def run_cases(url: str, rides: list[dict], args: argparse.Namespace) -> dict:
    """The three cases, one after another."""
    return {
        "sequential": await sequential(url, rides, args.requests, args.seconds),
        "concurrent": await concurrent(url, rides, args.clients, args.requests * 2, args.seconds),
        "batch": await batch(url, [as_json_numbers(ride) for ride in rides[: args.batch_rides]], args.batch_repeats),
    }


def verdict(case: str, result: dict) -> str:
    """Whether a case meets its target."""
    if case == "sequential":
        ok = result["p50"] <= 3 and result["p99"] <= 10
    elif case == "concurrent":
        ok = result["rate"] >= 500 and result["p99"] <= 100
    else:
        ok = result["p99"] < 500
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="scripts/bench_serve.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running server's base URL (default: start one)")
    parser.add_argument("--registry", default=None, help="registry of the model to serve (default: the local registry)")
    parser.add_argument(
        "--tiny_model", action="store_true", help="serve a tiny model trained for the benchmark in a temporary registry"
    )
    parser.add_argument("--requests", type=positive_int, default=3000, help="most requests per GET case")
    parser.add_argument("--seconds", type=positive_float, default=15.0, help="most seconds per GET case")
    parser.add_argument("--clients", type=positive_int, default=16, help="concurrent clients")
    parser.add_argument("--batch_rides", type=positive_int, default=10_000, help="rides per POST")
    parser.add_argument("--batch_repeats", type=positive_int, default=20, help="POSTs in the batch case")
    args = parser.parse_args(argv)
    if args.url and (args.registry or args.tiny_model):
        parser.error("--url serves its own model: drop --registry / --tiny_model")

    rides = ride_params(max(args.batch_rides, 2000))
    with tempfile.TemporaryDirectory() as scratch:
        process = None
        url = args.url
        if url is None:
            registry_dir = (
                tiny_registry(Path(scratch) / "registry")
                if args.tiny_model
                else (args.registry or str(contract.local_registry_path()))
            )
            process, url = start_server(registry_dir)
        try:
            model = requests.get(url + "/model", timeout=10).json()
            print(
                f"server {url}, run {model['run']}; {args.clients} clients, "
                f"at most {args.requests} requests / {args.seconds:g} s per GET case; "
                f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
                flush=True,
            )
            # The load generator's own pauses must not count as the server's: its set-up objects
            # (pandas, and TensorFlow with --tiny_model) are frozen out of the collector's passes.
            gc.collect()
            gc.freeze()
            results = asyncio.run(run_cases(url, rides, args))
        finally:
            if process is not None:
                stop_process(process, timeout=15)
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    print("\n| case | requests | p50 ms | p95 ms | p99 ms | throughput | target | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for case, result in results.items():
        unit = "rides/s" if case == "batch" else "req/s"
        print(
            f"| {case} | {result['requests']:,} | {result['p50']:.2f} | {result['p95']:.2f} | {result['p99']:.2f} "
            f"| {result['rate']:,.0f} {unit} | {TARGETS[case]} | {verdict(case, result)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
