"""The HTTP prediction service: numpy forward pass, request rides, and the real server process over HTTP.

The server tests start `python -m pipelines.serve` on a free loopback port (port 0, the
server prints the one it got), call it with `requests` as the course's front-ends do and
stop it by its PID at the end, also when a test fails.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from pipelines import batch_predict
from pipelines import predict as predict_module
from pipelines import serve as serve_module
from pipelines.preprocessing.parse import RawBlock
from process_helpers import server_url, start_server, stop_process
from shard_helpers import processed_rows, saved_tiny_model
from taxifare_core import contract, serving
from taxifare_core.features import encode
from taxifare_core.parsing import MalformedRecord, parse_frame
from taxifare_core.serving import forward
from taxifare_core.serving.service_rides import (
    pickup_to_utc,
    prepare_json_rides,
    prepare_ride,
)
from taxifare_core.storage import outputs
from taxifare_core.training import registry

START_TIMEOUT_S = 180
MAX_RIDES = 50
# The test server's connection limits: small, so that hostile clients reach them quickly.
KEEP_ALIVE_S = 2
MAX_CONNECTIONS = 100
BODY_TIMEOUT_S = 3
# The test server starts with this soft open-file limit: 300 idle sockets used to exhaust it.
SERVER_SOFT_NOFILE = 128
METRICS = {"val_mae": 2.5, "baseline_mae": 3.1, "rows": 300, "seconds": 4.0}
RIDE_FIELDS = (
    "pickup_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "passenger_count",
)
# New York local times, as the course's front-ends send them (no zone).
RIDES = [
    {
        "pickup_datetime": "2014-07-06 19:18:00",
        "pickup_longitude": "-73.950655",
        "pickup_latitude": "40.783282",
        "dropoff_longitude": "-73.984365",
        "dropoff_latitude": "40.769802",
        "passenger_count": "1",
    },
    {
        "pickup_datetime": "2012-01-15 08:05:00",
        "pickup_longitude": "-74.005",
        "pickup_latitude": "40.71",
        "dropoff_longitude": "-73.80",
        "dropoff_latitude": "40.64",
        "passenger_count": "3",
    },
    {
        "pickup_datetime": "2014-03-09 02:30:00",
        "pickup_longitude": "-73.99",
        "pickup_latitude": "40.75",
        "dropoff_longitude": "-73.95",
        "dropoff_latitude": "40.80",
        "passenger_count": "7",
    },
    {
        "pickup_datetime": "2014-11-02 01:30:00",
        "pickup_longitude": "-73.98",
        "pickup_latitude": "40.76",
        "dropoff_longitude": "-73.97",
        "dropoff_latitude": "40.78",
        "passenger_count": "2",
    },
    {
        "pickup_datetime": "2013-07-06 17:18:00 UTC",
        "pickup_longitude": "-73.950655",
        "pickup_latitude": "40.783282",
        "dropoff_longitude": "-73.984365",
        "dropoff_latitude": "40.769802",
        "passenger_count": "1",
    },
]


def _utc(ride: dict) -> dict:
    """The ride with its time as the contract's UTC text (what predict() and batch prediction read)."""
    return {**ride, "pickup_datetime": pickup_to_utc(ride["pickup_datetime"])}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A registry holding one briefly trained model, with a metrics.json."""
    root = tmp_path_factory.mktemp("registry")
    model, run_dir = saved_tiny_model(root, 300, seed=3, model_seed=2, epochs=2, metrics=METRICS)
    return {"root": str(root), "model": model, "run": run_dir.rsplit("/", 1)[-1]}


@pytest.fixture(scope="module")
def served(saved, tmp_path_factory):
    """The real server on a free loopback port: {"url", "log" (its stderr file)}. Stopped by PID at the end."""
    log = tmp_path_factory.mktemp("server") / "stderr.txt"
    with open(log, "w") as stderr:
        process = start_server(
            "--registry",
            saved["root"],
            "--port",
            "0",
            "--max_rides",
            str(MAX_RIDES),
            "--keep_alive_s",
            str(KEEP_ALIVE_S),
            "--max_connections",
            str(MAX_CONNECTIONS),
            "--body_timeout_s",
            str(BODY_TIMEOUT_S),
            stderr=stderr,
            nofile=(SERVER_SOFT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        )
    try:
        url = server_url(process, START_TIMEOUT_S)
        if not url:
            stop_process(process)
            pytest.fail(f"the server did not start: {log.read_text()[-2000:]}")
        yield {"url": url, "log": log}
        assert process.poll() is None, "the server died during the tests"
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def server(served) -> str:
    """The running server's base URL."""
    return served["url"]


# --- the numpy forward pass ------------------------------------------------------------------


def test_forward_pass_equals_keras_within_1e_5(saved):
    rows = processed_rows(400, seed=21)[:, :-1]
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (100, contract.N_FEATURES)).astype(np.float32)  # far from the training rows too
    features = np.vstack([rows, noise])
    net = forward.from_keras(saved["model"])
    expected = saved["model"].predict(features, verbose=0).reshape(-1)
    got = net(features)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(net(features[:1]), expected[:1], rtol=0, atol=1e-5)


def test_forward_pass_refuses_what_it_cannot_reproduce():
    from taxifare_core.training.model import keras_module

    keras = keras_module()
    odd = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="tanh")])
    with pytest.raises(forward.UnsupportedModelError, match="tanh"):
        forward.from_keras(odd)
    with pytest.raises(ValueError, match="65 features"):
        forward.from_keras(keras.Sequential([keras.Input(shape=(65,)), keras.layers.Dense(1)]))(np.zeros((1, 3)))


# --- request rides: New York times, the one-ride path, the JSON-list path -------------------


@pytest.mark.parametrize(
    "text, utc",
    [
        ("2014-07-06 19:18:00", "2014-07-06 23:18:00 UTC"),  # summer: EDT, UTC-4
        ("2014-01-06 19:18:00", "2014-01-07 00:18:00 UTC"),  # winter: EST, UTC-5
        ("2014-07-06T19:18:00", "2014-07-06 23:18:00 UTC"),
        ("2013-07-06 17:18:00 UTC", "2013-07-06 17:18:00 UTC"),  # the raw data's form
        ("2014-07-06T19:18:00Z", "2014-07-06 19:18:00 UTC"),
        ("2014-07-06T19:18:00+02:00", "2014-07-06 17:18:00 UTC"),
        ("2014-03-09 02:30:00", "2014-03-09 07:30:00 UTC"),  # spring-forward gap: EST still (= 03:30 EDT)
        ("2014-11-02 01:30:00", "2014-11-02 05:30:00 UTC"),  # fall-back hour: its first (EDT) occurrence
        ("2014-11-02 02:30:00", "2014-11-02 07:30:00 UTC"),
    ],
)
def test_pickup_without_zone_is_new_york_time(text, utc):
    assert pickup_to_utc(text) == utc


def test_pickup_out_of_range_or_unreadable():
    with pytest.raises(MalformedRecord, match="out of range"):
        pickup_to_utc("1500-01-01 00:00:00")
    with pytest.raises(MalformedRecord, match="expected a timestamp"):
        pickup_to_utc(5)
    assert pickup_to_utc("tomorrow") == "tomorrow"  # the contract's parser words that refusal
    assert pickup_to_utc("") == ""


def test_local_time_keeps_its_local_hour_and_weekday():
    features, reason = prepare_ride(RIDES[0])  # Sunday 2014-07-06 19:18 in New York
    assert reason is None
    assert features[0, contract.COL_HOUR_SIN] == pytest.approx(math.sin(2 * math.pi * 19 / 24), abs=1e-6)
    assert features[0, contract.COL_HOUR_COS] == pytest.approx(math.cos(2 * math.pi * 19 / 24), abs=1e-6)
    assert features[0, contract.COLS_WEEKDAY].argmax() == 6 and features[0, contract.COLS_MONTH].argmax() == 6


# Rides with UTC times (read alike by every path), good and bad: the one-ride path must agree with
# serving.prepare_rides, the path of predict() and batch prediction, on every reason and feature.
AGREEMENT_RIDES = [
    {k: str(v) for k, v in contract.EXAMPLE_RIDE.items()},
    *(_utc(ride) for ride in RIDES),
    {**_utc(RIDES[1]), "pickup_datetime": "1900-06-01 12:00:00 UTC"},
    {**_utc(RIDES[1]), "pickup_datetime": "2100-06-01 12:00:00 UTC"},
    {**_utc(RIDES[1]), "pickup_latitude": "41.5"},
    {**_utc(RIDES[1]), "dropoff_longitude": "-75"},
    {**_utc(RIDES[1]), "passenger_count": "0"},
    {**_utc(RIDES[1]), "passenger_count": "8"},
    {**_utc(RIDES[1]), "passenger_count": "2.5"},
    {**_utc(RIDES[1]), "passenger_count": "two"},
    {**_utc(RIDES[1]), "pickup_datetime": "tomorrow"},
    {**_utc(RIDES[1]), "pickup_longitude": ""},
    {
        **_utc(RIDES[1]),
        "pickup_longitude": "0",
        "pickup_latitude": "0",
        "dropoff_longitude": "0",
        "dropoff_latitude": "0",
    },
    {**_utc(RIDES[1]), "pickup_longitude": "abc", "pickup_datetime": "tomorrow"},
    # Digits other than ASCII 0-9: Python's float() and strptime read them, Arrow does not; refused everywhere.
    {**_utc(RIDES[1]), "passenger_count": "\u0663"},
    {**_utc(RIDES[1]), "pickup_latitude": "\u0664\u0660.\u0667"},
    {**_utc(RIDES[1]), "passenger_count": "\uff13"},
    {**_utc(RIDES[1]), "pickup_datetime": "\u0662\u0660\u0661\u0664-07-06 19:18:00 UTC"},
]


def test_one_ride_path_agrees_with_prepare_rides():
    batch = serving.prepare_rides(pd.DataFrame(AGREEMENT_RIDES))
    good = iter(batch.features)
    for ride, reason, valid in zip(AGREEMENT_RIDES, batch.reasons, batch.valid):
        features, single_reason = prepare_ride(ride)
        assert single_reason == reason, ride
        if valid:
            np.testing.assert_allclose(features[0], next(good), rtol=0, atol=1e-5)


def test_json_list_path_agrees_with_the_one_ride_path():
    rides = [
        *RIDES,
        *AGREEMENT_RIDES,
        {**RIDES[0], "pickup_datetime": "2014-7-6 19:18:00"},
        {**RIDES[0], "pickup_datetime": " 2014-07-06 19:18:00 "},
        {**RIDES[0], "pickup_datetime": "2014-07-06 19:18:60"},
        {**RIDES[0], "pickup_datetime": "1500-01-01 00:00:00"},
    ]
    numbers = [{k: (v if k == "pickup_datetime" else float(v)) for k, v in RIDES[1].items()}]  # JSON numbers
    prepared = prepare_json_rides(rides + numbers)
    good = iter(prepared.features)
    for ride, reason, valid in zip(rides + [RIDES[1]], prepared.reasons, prepared.valid):
        features, single_reason = prepare_ride(ride)
        assert single_reason == reason, ride
        if valid:
            np.testing.assert_allclose(next(good), features[0], rtol=0, atol=1e-5)


def test_json_list_refusals_name_each_ride():
    rides = [
        RIDES[0],
        5,
        {k: v for k, v in RIDES[0].items() if k != "passenger_count"},
        {**RIDES[0], "passenger_count": True},
        {**RIDES[0], "pickup_latitude": [40.7]},
        {**RIDES[0], "pickup_datetime": 20140706},
        {**RIDES[0], "pickup_datetime": "1500-01-01 00:00:00"},
        {**RIDES[0], "pickup_datetime": "1500-01-01 00:00:00", "pickup_latitude": "x"},
    ]
    reasons = prepare_json_rides(rides).reasons
    assert reasons[0] is None
    assert reasons[1].startswith("expected a JSON object")
    assert reasons[2] == "missing column(s): passenger_count"
    assert reasons[3] == "passenger_count: expected a whole number, got True"
    assert reasons[4] == "pickup_latitude: expected a number, got [40.7]"
    assert reasons[5] == "pickup_datetime: expected a timestamp, got 20140706"
    assert "out of range" in reasons[6]
    assert reasons[7] == "pickup_latitude: expected a number, got 'x'"  # an unreadable number is named first


def test_a_list_of_10000_rides_matches_encode():
    raw = pd.DataFrame([RIDES[i % 4] for i in range(10_000)])
    prepared = prepare_json_rides(raw.to_dict("records"))
    utc = raw.assign(pickup_datetime=[pickup_to_utc(t) for t in raw["pickup_datetime"]], fare_amount=1.0)
    np.testing.assert_allclose(prepared.features, encode(parse_frame(utc)[0]), rtol=0, atol=1e-6)


# --- the real server over HTTP ---------------------------------------------------------------


@pytest.mark.slow
def test_course_front_end_gets_the_fares_of_predict(server, saved):
    expected = predict_module.predict(pd.DataFrame([_utc(ride) for ride in RIDES]), saved["model"])
    for ride, fare in zip(RIDES, expected):
        response = requests.get(server + "/predict", params=ride, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["fare"] == pytest.approx(fare, abs=1e-4)
    # The course's Streamlit front-end passes Python numbers, which requests writes as text.
    params = {name: (float(value) if "itude" in name else value) for name, value in RIDES[0].items()}
    params["passenger_count"] = int(params["passenger_count"])
    assert requests.get(server + "/predict", params=params, timeout=10).json()["fare"] == pytest.approx(
        expected[0], abs=1e-4
    )


@pytest.mark.slow
def test_batch_prediction_gives_the_same_fares(server, saved, tmp_path):
    """The Beam batch path: its encoding priced by its model handler (1e-4), and its written files (cents)."""
    header = "key," + ",".join(RIDE_FIELDS)
    lines = [f"r{i}," + ",".join(_utc(ride)[field] for field in RIDE_FIELDS) for i, ride in enumerate(RIDES)]
    block = RawBlock("rides.csv", 2, tuple(header.split(",")), ("\n".join(lines) + "\n").encode())
    encoded, dead = batch_predict.encode_block(block, name_by_file=False)
    handler = batch_predict.KerasBlockModelHandler(f"{saved['root']}/{saved['run']}/{registry.MODEL_FILE}")
    [result] = handler.run_inference([encoded], saved["model"])
    answer = requests.post(server + "/predict", json=RIDES, timeout=30).json()
    assert not dead and answer["errors"] == []
    np.testing.assert_allclose(answer["fares"], result.inference, rtol=0, atol=1e-4)

    (tmp_path / "rides.csv").write_text("\n".join([header, *lines]) + "\n")
    batch_predict.run(str(tmp_path / "rides.csv"), str(tmp_path / "out"), registry_dir=saved["root"])
    written = dict(
        line.split(",")
        for path in outputs.resolve(str(tmp_path / "out" / "predictions-*.csv"))
        for line in Path(path).read_text().splitlines()[1:]
    )
    np.testing.assert_allclose([float(written[f"r{i}"]) for i in range(len(RIDES))], answer["fares"], atol=0.0051)


def _cli_error(saved, ride: dict, capsys) -> str:
    """The CLI's one-line refusal for a ride (time in UTC, as the CLI reads it)."""
    flags = [item for name in RIDE_FIELDS for item in (f"--{name}", str(ride[name]))]
    assert predict_module.main([*flags, "--registry", saved["root"]]) == 2
    return capsys.readouterr().err.strip()


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, words",
    [
        ({"pickup_latitude": "41.5"}, "outside New York: the model knows latitudes 40.5 to 40.9"),
        ({"dropoff_longitude": "-75.0"}, "outside New York: the model knows longitudes -74.3 to -73.7"),
        ({"passenger_count": "0"}, "passenger_count must be 1 to 7"),
        ({"passenger_count": "8"}, "passenger_count must be 1 to 7"),
        ({"passenger_count": "two"}, "passenger_count: expected a whole number, got 'two'"),
        ({"pickup_datetime": "tomorrow"}, "pickup_datetime: unreadable timestamp 'tomorrow'"),
        ({"pickup_longitude": ""}, "a value is missing"),
    ],
)
def test_refusals_are_422_in_the_cli_words(server, saved, capsys, change, words):
    ride = {**RIDES[4], **change}
    response = requests.get(server + "/predict", params=ride, timeout=10)
    assert response.status_code == 422 and "fare" not in response.json()
    detail = response.json()["detail"]
    assert words in detail and detail == f"cannot price this ride: {response.json()['reason']}"
    if change.get("pickup_longitude") != "":  # an empty flag is not a ride the CLI can be given
        assert _cli_error(saved, ride, capsys).endswith(detail)


@pytest.mark.slow
def test_missing_field_is_422(server):
    for absent in ("passenger_count", "pickup_datetime"):
        ride = {k: v for k, v in RIDES[0].items() if k != absent}
        response = requests.get(server + "/predict", params=ride, timeout=10)
        assert response.status_code == 422
        assert response.json()["detail"] == f"cannot price this ride: missing column(s): {absent}"


@pytest.mark.slow
def test_post_prices_a_list_and_names_refused_rides_by_index(server):
    rides = [
        RIDES[0],
        {**RIDES[1], "passenger_count": 9},
        7,
        RIDES[2],
        {k: v for k, v in RIDES[3].items() if k != "dropoff_latitude"},
        {**RIDES[3], "pickup_datetime": "soon"},
    ]
    response = requests.post(server + "/predict", json=rides, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    singles = [
        requests.get(server + "/predict", params=ride, timeout=10).json()["fare"] for ride in (RIDES[0], RIDES[2])
    ]
    assert answer["fares"][0] == pytest.approx(singles[0], abs=1e-9)
    assert answer["fares"][3] == pytest.approx(singles[1], abs=1e-9)
    assert [fare is None for fare in answer["fares"]] == [False, True, True, False, True, True]
    assert answer["errors"] == [
        {"index": 1, "reason": "passenger_count must be 1 to 7"},
        {"index": 2, "reason": "expected a JSON object with the fields " + ", ".join(RIDE_FIELDS)},
        {"index": 4, "reason": "missing column(s): dropoff_latitude"},
        {"index": 5, "reason": "pickup_datetime: unreadable timestamp 'soon'"},
    ]
    assert requests.post(server + "/predict", json=[], timeout=10).json() == {"fares": [], "errors": []}


@pytest.mark.slow
def test_malformed_posts_are_refused_and_the_server_keeps_serving(server):
    not_json = requests.post(server + "/predict", data=b"{not json", timeout=10)
    assert not_json.status_code == 422 and "not JSON" in not_json.json()["detail"]
    not_a_list = requests.post(server + "/predict", json={"rides": RIDES}, timeout=10)
    assert not_a_list.status_code == 422 and "expected a JSON list of rides" in not_a_list.json()["detail"]
    bad_bytes = requests.post(server + "/predict", data=b"\xff\xfe[1]", timeout=10)
    assert bad_bytes.status_code == 422
    too_many = requests.post(server + "/predict", json=[RIDES[0]] * (MAX_RIDES + 1), timeout=10)
    assert too_many.status_code == 413
    assert too_many.json()["detail"].startswith(f"{MAX_RIDES + 1} rides in one request; the limit is {MAX_RIDES} rides")
    too_big = requests.post(server + "/predict", data=b"[" + b" " * (MAX_RIDES * 1000) + b"]", timeout=10)
    assert too_big.status_code == 413 and "split the batch" in too_big.json()["detail"]
    assert requests.get(server + "/predict", params=RIDES[0], timeout=10).status_code == 200


@pytest.mark.slow
def test_concurrent_requests_get_their_own_fares(server):
    expected = [requests.get(server + "/predict", params=ride, timeout=10).json()["fare"] for ride in RIDES]

    def client(number: int) -> list[tuple[int, float]]:
        with requests.Session() as session:
            answers = []
            for k in range(12):
                index = (number + k) % len(RIDES)
                response = session.get(server + "/predict", params=RIDES[index], timeout=30)
                assert response.status_code == 200
                answers.append((index, response.json()["fare"]))
            return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [answer for answers in pool.map(client, range(16)) for answer in answers]
    assert len(answers) == 16 * 12
    assert all(fare == expected[index] for index, fare in answers)


@pytest.mark.slow
def test_health_and_model(server, saved):
    assert requests.get(server + "/health", timeout=10).json() == {"status": "ok", "run": saved["run"]}
    info = requests.get(server + "/model", timeout=10).json()
    assert info["run"] == saved["run"] and info["max_rides_per_request"] == MAX_RIDES
    assert {key: info[key] for key in METRICS} == METRICS
    trained = datetime.fromisoformat(info["trained_at"])
    assert trained.tzinfo is not None and trained.strftime(registry.RUN_NAME_FORMAT) == saved["run"].split("-")[0]
    assert info["forward_max_gap_vs_keras"] <= 1e-5


def _one_line_failure(process: subprocess.Popen) -> str:
    try:
        _, err = process.communicate(timeout=START_TIMEOUT_S)
    finally:
        stop_process(process)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_registry_is_one_line_and_a_non_zero_exit(tmp_path):
    line = _one_line_failure(start_server("--registry", str(tmp_path / "nowhere"), "--port", "0"))
    assert line.startswith("python -m pipelines.serve: error: no model in") and "make train" in line


@pytest.mark.slow
def test_unreadable_model_is_one_line_and_a_non_zero_exit(tmp_path):
    run = Path(registry.new_run(str(tmp_path)))
    (run / registry.MODEL_FILE).write_bytes(b"not a keras file")
    (run / registry.PARAMS_FILE).write_text(
        f'{{"{registry.FEATURE_CONTRACT_KEY}": "{registry.feature_contract_hash()}"}}'
    )
    (run / registry.METRICS_FILE).write_text("{}")  # a finished run whose model is broken
    line = _one_line_failure(start_server("--registry", str(tmp_path), "--port", "0", "--run", run.name))
    assert line.startswith("python -m pipelines.serve: error:") and registry.MODEL_FILE in line
    assert "is unreadable" in line and "train a new one" in line


@pytest.mark.slow
def test_busy_port_is_one_line(server, saved):
    port = server.rsplit(":", 1)[1]
    line = _one_line_failure(start_server("--registry", saved["root"], "--port", port))
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_bad_flag_is_one_line():
    line = _one_line_failure(start_server("--port", "70000"))
    assert "--port" in line and "65535" in line


# --- hostile clients, bad runs, signals (docs/reliability.md, "HTTP service") -----------------


def _idle_sockets(url: str, count: int) -> list[socket.socket]:
    """`count` loopback connections to the server that send nothing."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return [socket.create_connection((host, int(port)), timeout=10) for _ in range(count)]


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """True when the server closes (or resets) the connection within wait_s seconds."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.slow
def test_idle_connections_are_capped_and_timed_out_and_health_answers(served):
    """300 idle sockets once exhausted the server's 128 files: now the longest idle make room, all time out."""
    sockets = _idle_sockets(served["url"], 3 * MAX_CONNECTIONS)
    try:
        started = time.monotonic()
        assert requests.get(served["url"] + "/health", timeout=10).status_code == 200
        assert time.monotonic() - started < KEEP_ALIVE_S, "/health waited for the idle sockets to time out"
        assert all(_closed_by_server(sock, 5) for sock in sockets[:MAX_CONNECTIONS])  # made room for newer ones
        assert all(_closed_by_server(sock, KEEP_ALIVE_S + 5) for sock in sockets[-10:])  # timed out
    finally:
        for sock in sockets:
            sock.close()
    [half_head] = _idle_sockets(served["url"], 1)  # a request head that never ends is idle too
    with half_head:
        half_head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(half_head, KEEP_ALIVE_S + 5)
    with requests.Session() as session:  # a keep-alive client survives the pause: it reconnects
        assert session.get(served["url"] + "/health", timeout=10).status_code == 200
        time.sleep(KEEP_ALIVE_S + 1)
        assert session.get(served["url"] + "/health", timeout=10).status_code == 200
    assert "Traceback" not in served["log"].read_text()


@pytest.mark.slow
def test_a_body_of_too_many_values_is_refused_before_parsing(server):
    rides = [RIDES[0]] * (4 * MAX_RIDES)  # small in bytes, too many rides: counted, not parsed
    response = requests.post(server + "/predict", data=json.dumps(rides), timeout=10)
    assert response.status_code == 413
    assert "commas" in response.json()["detail"] and "split the batch" in response.json()["detail"]
    extra = [{**ride, "key": f"k{i}", "fare_amount": 5} for i, ride in enumerate(RIDES * 10)]  # 8 fields: fine
    assert requests.post(server + "/predict", json=extra, timeout=10).status_code == 200


@pytest.mark.slow
def test_deeply_nested_json_is_422_without_a_traceback(served):
    server = served["url"]
    for depth in (2_000, 20_000):
        response = requests.post(server + "/predict", data=b"[" * depth + b"]" * depth, timeout=10)
        assert response.status_code == 422 and "nested too deeply" in response.json()["detail"], response.text
    just_under = b"[" * 900 + b"]" * 900  # parses, then a ride's reason quotes it
    ride = json.dumps(RIDES[0]).encode().replace(b'"-73.950655"', just_under)
    response = requests.post(server + "/predict", data=b"[" + ride + b"]", timeout=10)
    assert response.status_code in (200, 422), response.text
    assert requests.get(server + "/health", timeout=10).status_code == 200
    assert "Traceback" not in served["log"].read_text()


def _wait_for_log(log: Path, words: str, timeout_s: float = 10) -> str:
    """The server's log once it holds `words` (or as it is after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while words not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return log.read_text()


@pytest.mark.slow
def test_a_client_leaving_mid_upload_is_one_log_line(served):
    [sock] = _idle_sockets(served["url"], 1)
    with sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40000\r\n\r\n[" + b" " * 1000
        )
        time.sleep(0.3)
    log = _wait_for_log(served["log"], "left during its POST /predict upload")
    lines = [line for line in log.splitlines() if "left during its POST" in line]
    assert len(lines) == 1 and "1,001 bytes received" in lines[0], log
    assert "Traceback" not in log and "ClientDisconnect" not in log
    assert requests.get(served["url"] + "/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_a_body_that_stops_arriving_gets_408(server):
    [sock] = _idle_sockets(server, 1)
    with sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n[" + b" " * 100)
        sock.settimeout(BODY_TIMEOUT_S + 10)
        answer = sock.recv(4096)
        while b"\r\n\r\n" in answer and not answer.rstrip().endswith(b"}"):  # the body may come in a second read
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 3 s" in answer


@pytest.mark.slow
def test_non_ascii_digits_are_refused_by_get_post_and_the_cli(server, saved, capsys):
    ride = {**RIDES[4], "passenger_count": "\u0663"}  # Arabic-Indic three
    words = "passenger_count: expected a whole number, got '\u0663'"
    get = requests.get(server + "/predict", params=ride, timeout=10)
    assert get.status_code == 422 and get.json()["reason"] == words
    post = requests.post(server + "/predict", json=[ride], timeout=10).json()
    assert post["errors"] == [{"index": 0, "reason": words}]
    assert _cli_error(saved, ride, capsys).endswith(words)
    latitude = {**RIDES[4], "pickup_latitude": "\u0664\u0660.\u0667"}  # the CLI's float flag read it as 40.7
    assert _cli_error(saved, latitude, capsys).endswith("pickup_latitude: expected a number, got '\u0664\u0660.\u0667'")


def _unusable_runs(root: Path) -> dict[str, Path]:
    """Two registries whose only run cannot price rides: a metrics.json list, a model of 10 inputs."""
    from taxifare_core.training.model import keras_module

    keras = keras_module()
    narrow = keras.Sequential([keras.Input(shape=(10,)), keras.layers.Dense(1)])
    registries = {"metrics": root / "metrics", "width": root / "width"}
    registry.save_run(registry.new_run(str(registries["width"])), narrow, {}, {"rows": 1})
    wide = keras.Sequential([keras.Input(shape=(contract.N_FEATURES,)), keras.layers.Dense(1)])
    run = registry.save_run(registry.new_run(str(registries["metrics"])), wide, {}, {"rows": 1})
    Path(run, registry.METRICS_FILE).write_text("[1, 2]\n")
    return registries


def _only_run(root: Path) -> str:
    """The one run of a registry (such a run cannot be promoted: it is asked for by name)."""
    return registry.run_names(str(root), finished=False)[-1]


@pytest.mark.slow
def test_a_run_that_cannot_price_rides_is_one_line_at_start_up(tmp_path, capsys):
    registries = _unusable_runs(tmp_path)
    expected = {
        "metrics": "metrics.json is a JSON list, not an object",
        "width": "its model takes inputs of shape (10,); the contract's rides have 65 features",
    }
    for kind, root in registries.items():
        with pytest.raises(registry.UnreadableModelError, match=expected[kind].replace("(", r"\(").replace(")", r"\)")):
            serve_module.load_served_model(_only_run(root), str(root))
        assert predict_module.main(["--registry", str(root), "--run", _only_run(root)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot price rides" in err and expected[kind] in err, err
    metrics_root = registries["metrics"]
    line = _one_line_failure(
        start_server("--registry", str(metrics_root), "--run", _only_run(metrics_root), "--port", "0")
    )
    assert line.startswith("python -m pipelines.serve: error: run ") and expected["metrics"] in line


def test_too_few_file_descriptors_for_max_connections_is_one_line():
    line = _one_line_failure(start_server("--port", "0", "--max_connections", "5000", nofile=(256, 1024)))
    assert "--max_connections 5,000 needs" in line and "ulimit -Hn" in line


@pytest.mark.slow
def test_signals_at_start_up_and_while_serving_are_one_line(saved):
    starting = start_server("--registry", saved["root"], "--port", "0")
    time.sleep(1.5)  # Python is up, TensorFlow is still loading
    starting.send_signal(signal.SIGINT)
    _, err = starting.communicate(timeout=60)
    assert starting.returncode == 130, err
    assert err.strip() == "python -m pipelines.serve: stopped by SIGINT", err

    running = start_server("--registry", saved["root"], "--port", "0")
    try:
        url = server_url(running, START_TIMEOUT_S)
        assert url and requests.get(url + "/health", timeout=10).status_code == 200
        running.send_signal(signal.SIGTERM)
        _, err = running.communicate(timeout=60)
    finally:
        stop_process(running)
    assert running.returncode == 143, err
    assert err.strip() == "python -m pipelines.serve: stopped by SIGTERM", err
