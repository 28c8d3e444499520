"""The model registry: collision-safe run folders, JSON files, load latest / by name, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taxifare_core import contract
from taxifare_core.training import registry
from taxifare_core.training.model import build_model

pytestmark = [pytest.mark.slow]


def _fitted_model(seed: int):
    """A contract model after one step on random rows: its optimizer state exists, as in every saved run."""
    model = build_model(seed=seed)
    rng = np.random.default_rng(seed)
    model.fit(
        rng.random((32, contract.N_FEATURES), dtype=np.float32),
        rng.random(32, dtype=np.float32) * 20,
        batch_size=32,
        epochs=1,
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def tiny_model():
    """A barely trained contract model (random-ish weights are all a round trip needs)."""
    return _fitted_model(3)


def _save(root, model, val_mae: float) -> str:
    run_dir = registry.new_run(str(root))
    registry.save_run(run_dir, model, {"learning_rate": 0.001}, {"val_mae": val_mae}, b"\x89PNG fake")
    return run_dir


def test_run_folders_are_unique_and_chronological(tmp_path):
    paths = [registry.new_run(str(tmp_path)) for _ in range(30)]
    names = [p.rsplit("/", 1)[-1] for p in paths]
    assert len(set(names)) == 30
    assert registry.run_names(str(tmp_path), finished=False) == names
    assert all(name.endswith("Z") or "Z-" in name for name in names)


def test_round_trip_production_and_by_name(tmp_path, tiny_model):
    first = _save(tmp_path, tiny_model, 3.0)
    other = _fitted_model(4)
    second = _save(tmp_path, other, 2.5)
    names = registry.run_names(str(tmp_path))
    assert names == [first.rsplit("/", 1)[-1], second.rsplit("/", 1)[-1]]
    assert registry.latest_run(str(tmp_path)) == names[1]

    x = np.random.default_rng(0).random((5, contract.N_FEATURES), dtype=np.float32)
    registry.promote(names[1], str(tmp_path))
    production = registry.load_model(registry=str(tmp_path))
    np.testing.assert_allclose(production.predict(x, verbose=0), other.predict(x, verbose=0), rtol=1e-5)
    named = registry.load_model(names[0], registry=str(tmp_path))
    np.testing.assert_allclose(named.predict(x, verbose=0), tiny_model.predict(x, verbose=0), rtol=1e-5)
    assert registry.load_metrics(registry=str(tmp_path)) == {"val_mae": 2.5}
    params = Path(registry.run_path(names[0], str(tmp_path))) / registry.PARAMS_FILE
    assert json.loads(params.read_text()) == {
        "learning_rate": 0.001,
        registry.FEATURE_CONTRACT_KEY: registry.feature_contract_hash(),
    }
    registry.promote(names[0], str(tmp_path))  # production is what was promoted last, not the latest run
    assert registry.load_metrics(registry=str(tmp_path)) == {"val_mae": 3.0}


def test_metadata_is_plain_json(tmp_path, tiny_model):
    run_dir = _save(tmp_path, tiny_model, 2.0)
    for name in (registry.PARAMS_FILE, registry.METRICS_FILE):
        json.loads((tmp_path / run_dir.rsplit("/", 1)[-1] / name).read_text())
    assert sorted(p.name for p in (tmp_path / run_dir.rsplit("/", 1)[-1]).iterdir()) == sorted(
        [registry.MODEL_FILE, registry.PARAMS_FILE, registry.METRICS_FILE, registry.CURVE_FILE]
    )


def test_unfinished_runs_and_other_folders_are_not_models(tmp_path, tiny_model):
    (tmp_path / "models").mkdir()  # the origin course's layout, left by reset_local_files
    unfinished = registry.new_run(str(tmp_path))
    finished = _save(tmp_path, tiny_model, 2.0)
    assert registry.run_names(str(tmp_path)) == [finished.rsplit("/", 1)[-1]]
    assert unfinished.rsplit("/", 1)[-1] in registry.run_names(str(tmp_path), finished=False)


def test_empty_registry_says_to_train_first(tmp_path):
    with pytest.raises(registry.NoModelError, match="no model in .*make train"):
        registry.load_model(registry=str(tmp_path / "absent"))


def test_unknown_run_name_lists_the_runs(tmp_path, tiny_model):
    run_dir = _save(tmp_path, tiny_model, 2.0)
    with pytest.raises(registry.NoModelError, match=run_dir.rsplit("/", 1)[-1]):
        registry.load_model("20000101T000000.000000Z", registry=str(tmp_path))


def test_default_registry_is_the_local_registry_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_REGISTRY_PATH", str(tmp_path / "outputs"))
    assert registry.registry_root() == str(tmp_path / "outputs")
    assert registry.new_run().startswith(str(tmp_path / "outputs"))
