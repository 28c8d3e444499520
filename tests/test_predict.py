"""Prediction: the Python API `predict(rides)` and the CLI (example ride, flagged ride, clear errors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines import predict as predict_module
from pipelines.predict import InvalidRideError, predict
from shard_helpers import saved_tiny_model
from taxifare_core import contract
from taxifare_core.features import encode_ride
from taxifare_core.parsing import parse_record

pytestmark = [pytest.mark.slow]

RIDE_FLAG_ORDER = (
    "pickup_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "passenger_count",
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A registry holding one briefly trained model."""
    root = tmp_path_factory.mktemp("registry")
    model, run_dir = saved_tiny_model(root, 300, seed=3, model_seed=2, epochs=2, metrics={"val_mae": 0.0})
    return {"root": str(root), "model": model, "run": run_dir.rsplit("/", 1)[-1]}


def _expected(model, rides: list[dict]) -> np.ndarray:
    """Fares through the independent per-ride encoder."""
    features = np.stack([encode_ride(parse_record({**ride, contract.LABEL_COLUMN: 1.0})) for ride in rides])
    return model.predict(features, verbose=0).reshape(-1)


RIDES = [
    contract.EXAMPLE_RIDE,
    {**contract.EXAMPLE_RIDE, "pickup_datetime": "2010-01-05 16:52:16 UTC", "passenger_count": 3},
    {**contract.EXAMPLE_RIDE, "dropoff_longitude": -73.80, "dropoff_latitude": 40.64},
]


def test_predict_matches_the_per_ride_encoder(saved):
    fares = predict(pd.DataFrame(RIDES), registry_dir=saved["root"])
    assert fares.shape == (3,) and np.isfinite(fares).all()
    np.testing.assert_allclose(fares, _expected(saved["model"], RIDES), rtol=1e-4, atol=1e-4)


def test_predict_ignores_any_fare_column(saved):
    rides = pd.DataFrame(RIDES).assign(fare_amount=["abc", "", "-5"])
    np.testing.assert_allclose(predict(rides, saved["model"]), predict(pd.DataFrame(RIDES), saved["model"]))


def test_predict_refuses_rides_it_cannot_price(saved):
    rides = pd.DataFrame([RIDES[0], {**RIDES[0], "pickup_latitude": 41.5}, {**RIDES[0], "passenger_count": 9}])
    with pytest.raises(InvalidRideError) as refused:
        predict(rides, saved["model"])
    assert set(refused.value.reasons) == {1, 2}
    assert "outside New York" in refused.value.reasons[1] and "passenger_count" in refused.value.reasons[2]
    fares = predict(rides, saved["model"], invalid="nan")
    assert np.isfinite(fares[0]) and np.isnan(fares[1:]).all()


def test_predict_by_run_name(saved):
    fares = predict(pd.DataFrame(RIDES[:1]), run=saved["run"], registry_dir=saved["root"])
    np.testing.assert_allclose(fares, _expected(saved["model"], RIDES[:1]), rtol=1e-4, atol=1e-4)


def test_cli_example_ride(saved, capsys):
    assert predict_module.main(["--registry", saved["root"]]) == 0
    out = capsys.readouterr().out
    fare = _expected(saved["model"], [contract.EXAMPLE_RIDE])[0]
    assert f"${fare:.2f}" in out and "example ride" in out and saved["run"] in out


def test_cli_flagged_ride(saved, capsys):
    ride = RIDES[2]
    flags = [item for name in RIDE_FLAG_ORDER for item in (f"--{name}", str(ride[name]))]
    assert predict_module.main([*flags, "--registry", saved["root"]]) == 0
    assert f"${_expected(saved['model'], [ride])[0]:.2f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pickup_latitude": 41.5}, "outside New York"),
        ({"dropoff_longitude": -75.0}, "outside New York"),
        ({"passenger_count": 0}, "passenger_count must be 1 to 7"),
        ({"passenger_count": "two"}, "passenger_count: expected a"),
        ({"pickup_datetime": "tomorrow"}, "unreadable timestamp"),
        ({"pickup_datetime": "2300-01-06 09:50:45 UTC"}, "pickup_datetime: out of range"),
        ({"pickup_datetime": "0001-01-01 00:00:00 UTC"}, "pickup_datetime: out of range"),
        ({"pickup_datetime": "2013-02-30 10:00:00 UTC"}, "pickup_datetime: invalid date"),
        ({"pickup_longitude": "inf"}, "pickup_longitude: not a finite number"),
        ({"passenger_count": "1e309"}, "passenger_count: not a finite number"),
    ],
)
def test_cli_bad_ride_is_a_message_not_a_number(saved, capsys, change, message):
    ride = {**contract.EXAMPLE_RIDE, **change}
    flags = [item for name in RIDE_FLAG_ORDER for item in (f"--{name}", str(ride[name]))]
    assert predict_module.main([*flags, "--registry", saved["root"]]) == 2
    captured = capsys.readouterr()
    assert "$" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err


def test_cli_missing_registry(tmp_path, capsys):
    assert predict_module.main(["--registry", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no model in" in err and "make train" in err


def test_cli_unknown_run(saved, capsys):
    assert predict_module.main(["--registry", saved["root"], "--run", "nope"]) == 2
    assert saved["run"] in capsys.readouterr().err


def test_cli_partial_ride_flags(saved, capsys):
    assert predict_module.main(["--pickup_latitude", "40.7", "--registry", saved["root"]]) == 2
    assert "missing --pickup_datetime" in capsys.readouterr().err


def test_cli_batch_needs_input_and_output(saved, capsys):
    assert predict_module.main(["--input", "x-*.csv", "--registry", saved["root"]]) == 2
    assert "--output" in capsys.readouterr().err
