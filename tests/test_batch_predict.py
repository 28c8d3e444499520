"""Beam batch prediction on a tiny saved model: keys or line numbers, dead letter with reasons, files."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from pipelines import batch_predict
from pipelines.preprocessing import parse as parse_module
from pipelines import predict as predict_module
from pipelines.cli import UsageError
from pipelines.preprocessing.parse import RawBlock, _split_with_arrow
from shard_helpers import saved_tiny_model
from taxifare_core import contract
from taxifare_core.storage import outputs
from taxifare_core.training import registry

pytestmark = [pytest.mark.slow]

HEADER = "key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,dropoff_longitude,dropoff_latitude,passenger_count"
GOOD = [
    "a1,4.5,2009-06-15 17:26:21 UTC,-73.844311,40.721319,-73.84161,40.712278,1",
    "a2,16.9,2010-01-05 16:52:16 UTC,-74.016048,40.711303,-73.979268,40.782004,2",
    ",5.7,2011-08-18 00:35:00 UTC,-73.982738,40.76127,-73.991242,40.750562,1",  # no key: line 5
    "a4,7.7,2012-04-21 04:30:42 UTC,-73.98713,40.733143,-73.991567,40.758092,1",
]
BAD = [
    "b1,5.0,2013-01-01 00:00:00 UTC,-73.98,41.70,-73.99,40.75,1",  # outside New York
    "b2,5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,9",  # passengers
    "b3,oops",  # field count
]


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory) -> str:
    """A tiny trained model saved in a registry; its model.keras path."""
    _, run_dir = saved_tiny_model(tmp_path_factory.mktemp("registry"), 200, seed=5, model_seed=1)
    return f"{run_dir}/{registry.MODEL_FILE}"


def _expected(model_uri: str, lines: list[str], header: str = HEADER) -> list[float]:
    rides = pd.read_csv(io.StringIO("\n".join([header, *lines])), dtype=str, keep_default_na=False)
    return list(predict_module.predict(rides, registry.load_keras_model(model_uri)))


def _rows(texts) -> list[list[str]]:
    return [row for text in texts for row in csv.reader(text.splitlines())]


def _matches(expected: dict[str, float]):
    def check(texts):
        got = {key: float(fare) for key, fare in _rows(texts)}
        if set(got) != set(expected):
            raise BeamAssertException(f"keys {sorted(got)} != {sorted(expected)}")
        for key, fare in expected.items():
            if abs(got[key] - fare) > 0.006:
                raise BeamAssertException(f"{key}: {got[key]} != {fare:.2f}")
    return check


def _dead_reasons(expected: dict[str, str]):
    def check(texts):
        got = {key: reason for key, reason, _ in _rows(texts)}
        if set(got) != set(expected):
            raise BeamAssertException(f"dead keys {sorted(got)} != {sorted(expected)}")
        for key, word in expected.items():
            if word not in got[key]:
                raise BeamAssertException(f"{key}: {got[key]!r} lacks {word!r}")
    return check


def test_pipeline_prices_good_rides_and_dead_letters_bad_ones(tmp_path, model_uri):
    path = tmp_path / "rides.csv"
    path.write_text("\n".join([HEADER, *GOOD[:2], BAD[0], GOOD[2], BAD[2], "", GOOD[3], BAD[1]]) + "\n")
    fares = _expected(model_uri, GOOD)
    with test_pipeline.TestPipeline() as pipeline:
        outputs = pipeline | batch_predict.PredictRideFiles(str(path), model_uri, name_by_file=False, block_rows=3)
        assert_that(outputs["predictions"], _matches({"a1": fares[0], "a2": fares[1], "5": fares[2], "a4": fares[3]}),
                    label="predictions")
        assert_that(outputs["dead_letter"], _dead_reasons({"b1": "outside New York", "b2": "passenger_count",
                                                           "6": "expected 8 fields"}), label="dead")


def test_without_key_column_rides_are_named_by_line_and_file(tmp_path, model_uri):
    header = HEADER.split(",", 1)[1]
    lines = [line.split(",", 1)[1] for line in GOOD]
    (tmp_path / "one.csv").write_text("\n".join([header, *lines[:2]]) + "\n")
    (tmp_path / "two.csv").write_text("\n".join([header, *lines[2:]]))
    fares = _expected(model_uri, lines, header)
    with test_pipeline.TestPipeline() as pipeline:
        outputs = pipeline | batch_predict.PredictRideFiles(str(tmp_path / "*.csv"), model_uri, name_by_file=True)
        assert_that(outputs["predictions"], _matches(
            {"one.csv:2": fares[0], "one.csv:3": fares[1], "two.csv:2": fares[2], "two.csv:3": fares[3]}))


def test_run_writes_csv_files_and_counts(tmp_path, model_uri, monkeypatch):
    registry_root = model_uri.rsplit("/", 2)[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rides.csv").write_text("\n".join([HEADER, *GOOD, *BAD]) + "\n")
    summary = batch_predict.run(str(tmp_path / "in" / "*.csv"), str(tmp_path / "out"), registry_dir=registry_root)
    assert summary["predicted"] == 4 and summary["dead_letter"] == 3
    [predictions] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "predictions-*.csv"))]
    lines = predictions.read_text().splitlines()
    assert lines[0] == "key,fare_pred" and len(lines) == 5
    np.testing.assert_allclose(sorted(float(line.split(",")[1]) for line in lines[1:]),
                               sorted(_expected(model_uri, GOOD)), atol=0.006)
    [dead] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "dead_letter-*.csv"))]
    assert dead.read_text().splitlines()[0] == "key,reason,input" and len(dead.read_text().splitlines()) == 4


def test_header_without_a_needed_column_is_a_usage_error(tmp_path, model_uri):
    (tmp_path / "rides.csv").write_text("key,pickup_datetime\nx,2013-01-01 00:00:00 UTC\n")
    with pytest.raises(UsageError, match="header lacks column"):
        batch_predict.run(str(tmp_path / "rides.csv"), str(tmp_path / "out"),
                          registry_dir=model_uri.rsplit("/", 2)[0])


def test_cli_no_input_file_is_one_line_exit_2(tmp_path, model_uri, capsys):
    code = predict_module.main(["--input", str(tmp_path / "none-*.csv"), "--output", str(tmp_path / "out"),
                                "--registry", model_uri.rsplit("/", 2)[0]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no file matches" in err


def test_the_example_ride_needs_no_fare_column(model_uri):
    rides = pd.DataFrame([contract.EXAMPLE_RIDE])
    assert np.isfinite(predict_module.predict(rides, registry.load_keras_model(model_uri))).all()


def _raw_block(lines: list[str], first_line: int = 2) -> RawBlock:
    return RawBlock("rides.csv", first_line, tuple(HEADER.split(",")), ("\n".join(lines) + "\n").encode())


def test_arrow_and_line_by_line_splits_agree(monkeypatch):
    """The fast split (Arrow, bad field counts set aside) and the csv-module fallback price a block alike."""
    quoted = '"a5",5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,"1"'
    block = _raw_block([*GOOD[:2], BAD[2], quoted, BAD[0], "x,y,z,w,v,u,t,s,r", GOOD[2]])
    assert _split_with_arrow(
        [(n, t) for n, t in enumerate(block.data.decode().splitlines(), start=2)], block.columns) is not None
    fast = batch_predict.encode_block(block, name_by_file=False)
    monkeypatch.setattr(parse_module, "_split_with_arrow", lambda *_: None)
    slow = batch_predict.encode_block(block, name_by_file=False)
    assert fast[0].keys == slow[0].keys == ("a1", "a2", "a5", "8")
    np.testing.assert_array_equal(fast[0].features, slow[0].features)
    assert sorted(fast[1]) == sorted(slow[1]) and len(fast[1]) == 3


def test_a_model_answering_nan_prices_nothing_and_says_why(tmp_path):
    """A broken model (NaN weights) never writes a NaN fare: each ride goes to the dead letter with the reason."""
    from taxifare_core.training import registry

    model, _ = saved_tiny_model(tmp_path / "good", 200, seed=5, model_seed=1)
    model.set_weights([np.full_like(weights, np.nan) for weights in model.get_weights()])
    broken = registry.save_run(registry.new_run(str(tmp_path / "registry")), model, {}, {})
    (tmp_path / "rides.csv").write_text("\n".join([HEADER, *GOOD]) + "\n")
    summary = batch_predict.run(str(tmp_path / "rides.csv"), str(tmp_path / "out"), registry.run_name(broken),
                                registry_dir=str(tmp_path / "registry"))
    assert broken.rstrip("/").endswith(summary["model"].rsplit("/", 2)[1])
    assert summary["predicted"] == 0 and summary["dead_letter"] == len(GOOD)
    [dead] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "dead_letter-*.csv"))]
    rows = list(csv.reader(dead.read_text().splitlines()[1:]))
    keys = [line.split(",")[0] or str(number) for number, line in enumerate(GOOD, start=2)]  # no key: its line
    assert sorted(row[0] for row in rows) == sorted(keys)
    assert all(row[1] == batch_predict.NON_FINITE_FARE for row in rows)
    predictions = "".join(Path(p).read_text() for p in outputs.resolve(str(tmp_path / "out" / "predictions-*.csv")))
    assert "nan" not in predictions.lower()
