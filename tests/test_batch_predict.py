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
from pipelines import predict as predict_module
from pipelines.cli import UsageError
from pipelines.preprocessing import parse as parse_module
from pipelines.preprocessing.parse import RawBlock, _split_with_arrow
from shard_helpers import saved_tiny_model
from taxifare_core import contract
from taxifare_core.storage import outputs
from taxifare_core.training import registry

pytestmark = [pytest.mark.slow]

HEADER = (
    "key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,dropoff_longitude,dropoff_latitude,"
    "passenger_count"
)
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
        assert_that(
            outputs["predictions"],
            _matches({"a1": fares[0], "a2": fares[1], "5": fares[2], "a4": fares[3]}),
            label="predictions",
        )
        assert_that(
            outputs["dead_letter"],
            _dead_reasons({"b1": "outside New York", "b2": "passenger_count", "6": "expected 8 fields"}),
            label="dead",
        )


def test_without_key_column_rides_are_named_by_line_and_file(tmp_path, model_uri):
    header = HEADER.split(",", 1)[1]
    lines = [line.split(",", 1)[1] for line in GOOD]
    (tmp_path / "one.csv").write_text("\n".join([header, *lines[:2]]) + "\n")
    (tmp_path / "two.csv").write_text("\n".join([header, *lines[2:]]))
    fares = _expected(model_uri, lines, header)
    with test_pipeline.TestPipeline() as pipeline:
        outputs = pipeline | batch_predict.PredictRideFiles(str(tmp_path / "*.csv"), model_uri, name_by_file=True)
        assert_that(
            outputs["predictions"],
            _matches({"one.csv:2": fares[0], "one.csv:3": fares[1], "two.csv:2": fares[2], "two.csv:3": fares[3]}),
        )


def test_run_writes_csv_files_and_counts(tmp_path, model_uri, monkeypatch):
    registry_root = model_uri.rsplit("/", 2)[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rides.csv").write_text("\n".join([HEADER, *GOOD, *BAD]) + "\n")
    summary = batch_predict.run(str(tmp_path / "in" / "*.csv"), str(tmp_path / "out"), registry_dir=registry_root)
    assert summary["predicted"] == 4 and summary["dead_letter"] == 3
    [predictions] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "predictions-*.csv"))]
    lines = predictions.read_text().splitlines()
    assert lines[0] == "key,fare_pred" and len(lines) == 5
    np.testing.assert_allclose(
        sorted(float(line.split(",")[1]) for line in lines[1:]), sorted(_expected(model_uri, GOOD)), atol=0.006
    )
    [dead] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "dead_letter-*.csv"))]
    assert dead.read_text().splitlines()[0] == "key,reason,input" and len(dead.read_text().splitlines()) == 4


def test_header_without_a_needed_column_is_a_usage_error(tmp_path, model_uri):
    (tmp_path / "rides.csv").write_text("key,pickup_datetime\nx,2013-01-01 00:00:00 UTC\n")
    with pytest.raises(UsageError, match="header lacks column"):
        batch_predict.run(str(tmp_path / "rides.csv"), str(tmp_path / "out"), registry_dir=model_uri.rsplit("/", 2)[0])


def test_cli_no_input_file_is_one_line_exit_2(tmp_path, model_uri, capsys):
    code = predict_module.main(
        [
            "--input",
            str(tmp_path / "none-*.csv"),
            "--output",
            str(tmp_path / "out"),
            "--registry",
            model_uri.rsplit("/", 2)[0],
        ]
    )
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
    assert (
        _split_with_arrow([(n, t) for n, t in enumerate(block.data.decode().splitlines(), start=2)], block.columns)
        is not None
    )
    fast = batch_predict.encode_block(block, name_by_file=False)
    monkeypatch.setattr(parse_module, "_split_with_arrow", lambda *_: None)
    slow = batch_predict.encode_block(block, name_by_file=False)
    assert fast[0].keys.to_pylist() == slow[0].keys.to_pylist() == ["a1", "a2", "a5", "8"]
    np.testing.assert_array_equal(fast[0].features, slow[0].features)
    assert sorted(fast[1]) == sorted(slow[1]) and len(fast[1]) == 3


def test_a_model_answering_nan_prices_nothing_and_says_why(tmp_path):
    """A broken model (NaN weights) never writes a NaN fare: each ride goes to the dead letter with the reason."""
    from taxifare_core.training import registry

    model, _ = saved_tiny_model(tmp_path / "good", 200, seed=5, model_seed=1)
    model.set_weights([np.full_like(weights, np.nan) for weights in model.get_weights()])
    broken = registry.save_run(registry.new_run(str(tmp_path / "registry")), model, {}, {})
    (tmp_path / "rides.csv").write_text("\n".join([HEADER, *GOOD]) + "\n")
    summary = batch_predict.run(
        str(tmp_path / "rides.csv"),
        str(tmp_path / "out"),
        registry.run_name(broken),
        registry_dir=str(tmp_path / "registry"),
    )
    assert broken.rstrip("/").endswith(summary["model"].rsplit("/", 2)[1])
    assert summary["predicted"] == 0 and summary["dead_letter"] == len(GOOD)
    [dead] = [Path(p) for p in outputs.resolve(str(tmp_path / "out" / "dead_letter-*.csv"))]
    rows = list(csv.reader(dead.read_text().splitlines()[1:]))
    keys = [line.split(",")[0] or str(number) for number, line in enumerate(GOOD, start=2)]  # no key: its line
    assert sorted(row[0] for row in rows) == sorted(keys)
    assert all(row[1] == batch_predict.NON_FINITE_FARE for row in rows)
    predictions = "".join(Path(p).read_text() for p in outputs.resolve(str(tmp_path / "out" / "predictions-*.csv")))
    assert "nan" not in predictions.lower()


@pytest.mark.parametrize("key", ["a\rb", "c\nd", "e\r\nf", 'g,"h'])
def test_a_key_with_a_carriage_return_or_newline_stays_one_row(key):
    line = batch_predict._csv_line(key, "12.50")
    assert list(csv.reader(io.StringIO(line, newline=""))) == [[key, "12.50"]]
    # as any reader with universal newlines reads the file (pandas, Python's open() in text mode)
    assert pd.read_csv(io.StringIO("key,fare_pred\n" + line + "\n"), dtype=str).values.tolist() == [[key, "12.50"]]


def test_run_writes_one_row_per_ride_whatever_its_key(tmp_path, model_uri):
    registry_root = model_uri.rsplit("/", 2)[0]
    (tmp_path / "in").mkdir()
    good = [GOOD[0].replace("a1,", '"k\r1",', 1), GOOD[1].replace("a2,", '"k,""2",', 1), GOOD[3]]
    (tmp_path / "in" / "rides.csv").write_bytes(("\n".join([HEADER, *good]) + "\n").encode())
    summary = batch_predict.run(str(tmp_path / "in" / "rides.csv"), str(tmp_path / "out"), registry_dir=registry_root)
    assert summary["predicted"] == 3
    [predictions] = outputs.resolve(str(tmp_path / "out" / "predictions-*.csv"))
    with open(predictions, newline="") as handle:
        rows = list(csv.reader(handle))
    assert sorted(key for key, _ in rows[1:]) == sorted(["k\r1", 'k,"2', "a4"])


def test_same_named_files_in_two_folders_get_different_keys(tmp_path, model_uri):
    registry_root = model_uri.rsplit("/", 2)[0]
    header = HEADER.split(",", 1)[1]
    lines = [line.split(",", 1)[1] for line in GOOD]
    for year in ("2015", "2016"):
        (tmp_path / "in" / year).mkdir(parents=True)
        (tmp_path / "in" / year / "rides.csv").write_text("\n".join([header, *lines[:2]]) + "\n")
    summary = batch_predict.run(
        str(tmp_path / "in" / "*" / "rides.csv"), str(tmp_path / "out"), registry_dir=registry_root
    )
    assert summary["predicted"] == 4
    [predictions] = outputs.resolve(str(tmp_path / "out" / "predictions-*.csv"))
    keys = [row[0] for row in csv.reader(Path(predictions).read_text().splitlines()[1:])]
    assert sorted(keys) == ["2015/rides.csv:2", "2015/rides.csv:3", "2016/rides.csv:2", "2016/rides.csv:3"]


@pytest.mark.parametrize(
    "files, common",
    [
        (["/d/in/2015/a.csv", "/d/in/2016/a.csv"], "/d/in"),
        (["/a/x.csv", "/b/x.csv"], ""),
        (["gs://b/in/x.csv", "gs://b/in/y/x.csv"], "gs://b/in"),
    ],
)
def test_common_folder_and_file_labels(files, common):
    assert batch_predict.common_folder(files) == common
    labels = [batch_predict.file_label(path, common) for path in files]
    assert len(set(labels)) == len(labels)


def test_report_refuses_a_batch_prediction_folder_in_one_line(tmp_path, model_uri, capsys):
    from pipelines import report

    registry_root = model_uri.rsplit("/", 2)[0]
    (tmp_path / "rides.csv").write_text("\n".join([HEADER, *GOOD]) + "\n")
    batch_predict.run(str(tmp_path / "rides.csv"), str(tmp_path / "out"), registry_dir=registry_root)
    capsys.readouterr()
    assert report.main([str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a predict output, not a preprocessing one" in err
    assert not (tmp_path / "out" / "report.html").exists()
