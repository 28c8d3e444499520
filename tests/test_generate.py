"""Tests of the seeded ride generator (taxifare_core/generate.py), its shard writer and default sample, and its CLI.

    .venv/bin/python -m pytest tests/test_generate.py -q

The generated-vs-real comparisons read the real 8k sample beside the project
(../shared/data/nyc_taxi_fare_sample_8k.csv, or $TAXIFARE_REAL_SAMPLE); when it is
absent they skip and say so - they never pass without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxifare_core import cleaning, contract, default_sample, generate, ride_shards

ROOT = Path(__file__).resolve().parents[1]
GENERATED_ROWS = 200_000
FARE, TIME, PASSENGERS = contract.LABEL_COLUMN, contract.TIME_COLUMN, contract.PASSENGER_COLUMN


@pytest.fixture(scope="module")
def real(real_sample_path) -> pd.DataFrame:
    """The real sample (tests/conftest.py skips, saying the comparison needs real rides, without it)."""
    return pd.read_csv(real_sample_path)


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory) -> Path:
    """A folder of generated rides written by the streaming writer, in two shards."""
    out = tmp_path_factory.mktemp("generated")
    ride_shards.write_ride_shards(out, GENERATED_ROWS, seed=11, num_shards=2)
    return out


@pytest.fixture(scope="module")
def generated(generated_csv) -> pd.DataFrame:
    """The generated rides read back like the real ones (plain pd.read_csv)."""
    paths = sorted(generated_csv.glob("rides-*.csv"))
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def manhattan_km(rides: pd.DataFrame) -> pd.Series:
    """The contract's "manhattan" distance (CONTRACT.md section 3)."""
    lon1, lat1, lon2, lat2 = (np.radians(rides[c]) for c in contract.COORDINATE_COLUMNS)
    return contract.EARTH_RADIUS_KM * ((lat2 - lat1).abs() + (lon2 - lon1).abs())


def clean(rides: pd.DataFrame) -> pd.DataFrame:
    """Rows that pass every cleaning rule."""
    return cleaning.clean(rides).kept


def parse_stamps(rides: pd.DataFrame) -> pd.Series:
    """Pickup times parsed with the contract's CSV format (raises on any other form)."""
    return pd.to_datetime(rides[TIME].dropna(), format=contract.CSV_TIME_FORMAT)


def share_gap(a: pd.Series, b: pd.Series) -> float:
    """Largest difference between the two series' value shares."""
    difference = a.value_counts(normalize=True).sub(b.value_counts(normalize=True), fill_value=0)
    return float(difference.abs().max())


# --- form -------------------------------------------------------------------


def test_csv_has_the_raw_columns_time_format_and_unique_keys(generated_csv, generated):
    for path in generated_csv.glob("rides-*.csv"):
        assert path.read_text().split("\n", 1)[0] == ",".join(contract.RAW_COLUMNS_WITH_KEY)
    assert tuple(generated.columns) == contract.RAW_COLUMNS_WITH_KEY
    assert generated[contract.KEY_COLUMN].is_unique
    stamps = parse_stamps(generated)
    assert stamps.min() >= pd.Timestamp("2009-01-01")
    assert stamps.max() < pd.Timestamp("2015-07-01")
    coordinates = generated[list(contract.COORDINATE_COLUMNS)].stack().dropna()
    assert np.allclose(coordinates, coordinates.round(6), rtol=0, atol=1e-9)
    assert (coordinates.round(4) != coordinates).mean() > 0.9  # ~6 decimals, not coarser


def test_missing_values_are_empty_csv_fields(generated_csv):
    text = "".join(p.read_text() for p in generated_csv.glob("rides-*.csv"))
    assert ",," in text or ",\n" in text
    assert "nan" not in text.lower() and "null" not in text.lower()


def test_in_memory_frame_has_the_raw_schema():
    rides = generate.generate_rides(500, seed=2)
    assert tuple(rides.columns) == contract.RAW_COLUMNS_WITH_KEY
    assert str(rides[TIME].dtype) == contract.RAW_DTYPES[TIME]
    assert rides[PASSENGERS].dtype == "Int16"  # nullable: some rows miss it
    assert len(generate.generate_rides(0)) == 0


# --- determinism --------------------------------------------------------------


def test_same_seed_same_rows_and_other_seed_other_rows():
    first = generate.generate_rides(2_000, seed=7)
    pd.testing.assert_frame_equal(first, generate.generate_rides(2_000, seed=7))
    other = generate.generate_rides(2_000, seed=8)
    lon = contract.COORDINATE_COLUMNS[0]
    assert (first[lon] == other[lon]).mean() < 0.05  # zero coordinates may match
    assert (first[TIME] == other[TIME]).mean() < 0.01


def test_start_row_gives_the_same_rows_across_a_block_boundary():
    whole = generate.generate_rides(generate.BLOCK_ROWS + 500, seed=3)
    part = generate.generate_rides(1_000, seed=3, start_row=generate.BLOCK_ROWS - 500)
    pd.testing.assert_frame_equal(whole.iloc[-1_000:].reset_index(drop=True), part)
    blocks = list(generate.iter_ride_blocks(generate.BLOCK_ROWS + 500, seed=3))
    assert [len(b) for b in blocks] == [generate.BLOCK_ROWS, 500]


def test_shards_concatenate_to_the_same_rows(tmp_path):
    n = 2 * generate.BLOCK_ROWS + 7  # shard edges fall inside blocks
    bodies = {}
    for shards in (1, 3):
        paths = ride_shards.write_ride_shards(tmp_path / str(shards), n, seed=5, num_shards=shards)
        bodies[shards] = b"".join(p.read_bytes().split(b"\n", 1)[1] for p in paths)
    assert bodies[1] == bodies[3]
    assert bodies[1].count(b"\n") == n


def test_writer_writes_the_row_count_with_a_header_per_shard(tmp_path):
    paths = ride_shards.write_ride_shards(tmp_path, 10_001, seed=1, num_shards=4)
    assert [p.name for p in paths] == [f"rides-{k:05d}-of-00004.csv" for k in range(4)]
    frames = [pd.read_csv(p) for p in paths]
    assert all(tuple(f.columns) == contract.RAW_COLUMNS_WITH_KEY for f in frames)
    assert [len(f) for f in frames] == [2500, 2500, 2500, 2501]
    with pytest.raises(FileExistsError):  # a glob over the folder would mix two runs
        ride_shards.write_ride_shards(tmp_path, 10, num_shards=1)
    (only,) = ride_shards.write_ride_shards(tmp_path, 0, num_shards=1, overwrite=True)
    assert sorted(tmp_path.iterdir()) == [only]
    assert only.read_text() == ",".join(contract.RAW_COLUMNS_WITH_KEY) + "\n"


def test_default_sample_is_written_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_DATA_PATH", str(tmp_path))
    writer = ride_shards.write_ride_shards

    def interrupted(output_dir, *args, **kwargs):
        writer(output_dir, *args, **kwargs)
        raise KeyboardInterrupt  # killed after writing, before the rename

    monkeypatch.setattr(default_sample, "write_ride_shards", interrupted)
    with pytest.raises(KeyboardInterrupt):
        default_sample.ensure_default_sample(1_000, seed=4)
    assert not any((tmp_path / "raw").iterdir())  # no sample, no temp folder

    monkeypatch.setattr(default_sample, "write_ride_shards", writer)
    glob = default_sample.ensure_default_sample(1_000, seed=4)
    assert Path(glob).parent == tmp_path / "raw" / "generated_1000_seed4"
    (path,) = Path(glob).parent.glob(Path(glob).name)
    written = path.stat().st_mtime_ns
    assert default_sample.ensure_default_sample(1_000, seed=4) == glob
    assert path.stat().st_mtime_ns == written
    assert len(pd.read_csv(path)) == 1_000


# --- dirt ---------------------------------------------------------------------


def dirty_shares(rides: pd.DataFrame) -> dict[str, float]:
    """Share of rows each cleaning rule drops (taxifare_core.cleaning), plus "total"."""
    dropped = cleaning.clean(rides).dropped
    count = max(len(rides), 1)
    shares = {rule: float((dropped == rule).sum() / count) for rule in contract.CLEANING_RULES}
    shares["total"] = len(dropped) / count
    return shares


def test_dirty_shares_counts_each_rule_once():
    pickup_lon, pickup_lat, _, dropoff_lat = contract.COORDINATE_COLUMNS
    good = {**contract.EXAMPLE_RIDE, FARE: 8.5}
    rows = [
        good,
        good,  # a duplicate
        {**good, FARE: None},
        {**good, **dict.fromkeys(contract.COORDINATE_COLUMNS, 0.0), PASSENGERS: 0},  # zeros first
        {**good, PASSENGERS: contract.PASSENGER_MAX_EXCLUSIVE},
        {**good, FARE: contract.FARE_MAX_EXCLUSIVE},
        {**good, dropoff_lat: contract.LATITUDE_MAX + 0.01},
        {**good, pickup_lon: contract.LONGITUDE_MAX + 0.01},
        {**good, pickup_lat: contract.LATITUDE_MIN, pickup_lon: contract.LONGITUDE_MIN},  # on edges
    ]
    shares = dirty_shares(pd.DataFrame(rows))
    assert shares == {**dict.fromkeys(contract.CLEANING_RULES, 1 / 9), "total": 7 / 9}


def test_dirty_shares_match_the_real_sample(real, generated):
    real_shares, shares = dirty_shares(real), dirty_shares(generated)
    for rule in contract.CLEANING_RULES:
        assert shares[rule] > 0, f"{rule} never exercised"
        assert abs(shares[rule] - real_shares[rule]) < 0.005, (rule, real_shares, shares)
    assert abs(shares["total"] - real_shares["total"]) < 0.01


# --- realism ------------------------------------------------------------------


def test_clean_rows_are_in_new_york_and_fares_follow_distance(generated):
    rides = generated.dropna()
    moved = rides[(rides[list(contract.COORDINATE_COLUMNS)] != 0).all(axis=1)]
    assert len(clean(moved)) / len(moved) > 0.98
    rows = clean(generated)
    assert len(rows) / len(generated) > 0.95
    assert np.corrcoef(manhattan_km(rows), rows[FARE])[0, 1] > 0.7
    assert (rows[FARE] >= generate.FLAG_DROP).mean() > 0.99


def test_clean_rows_look_like_the_real_ones(real, generated):
    real_rows, rows = clean(real), clean(generated)
    real_r = np.corrcoef(manhattan_km(real_rows), real_rows[FARE])[0, 1]
    r = np.corrcoef(manhattan_km(rows), rows[FARE])[0, 1]
    assert abs(r - real_r) < 0.08, (real_r, r)
    for q in (0.25, 0.5, 0.75):
        real_km, km = manhattan_km(real_rows).quantile(q), manhattan_km(rows).quantile(q)
        assert km == pytest.approx(real_km, rel=0.2), (q, real_km, km)
        assert rows[FARE].quantile(q) == pytest.approx(real_rows[FARE].quantile(q), rel=0.15)
    real_stamps, stamps = parse_stamps(real_rows), parse_stamps(rows)
    assert share_gap(stamps.dt.hour, real_stamps.dt.hour) < 0.01
    assert share_gap(stamps.dt.year, real_stamps.dt.year) < 0.03
    assert share_gap(rows[PASSENGERS], real_rows[PASSENGERS]) < 0.03


# --- CLI ----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run scripts/generate_rides.py from outside the checkout."""
    script = ROOT / "scripts" / "generate_rides.py"
    return subprocess.run([sys.executable, str(script), *args],
                          capture_output=True, text=True, cwd="/", timeout=120)  # fmt: skip


def test_cli_writes_shards_and_one_summary_line(tmp_path):
    done = run_cli("--rows", "1000", "--seed", "9", "--num_shards", "2", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "rows/s" in done.stdout
    assert sum(len(pd.read_csv(p)) for p in tmp_path.glob("rides-*.csv")) == 1000


@pytest.mark.parametrize(
    "flags", [["--rows", "-1"], ["--rows", "many"], ["--num_shards", "0"], ["--output", "FILE/out"]]
)
def test_cli_bad_flags_give_one_error_line_and_exit_2(tmp_path, flags):
    (tmp_path / "FILE").write_text("a file, not a folder")
    flags = [str(tmp_path / f) if f.startswith("FILE") else f for f in flags]
    done = run_cli("--rows", "10", *flags)  # a later --rows wins
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "error" in done.stderr
    assert "Traceback" not in done.stderr


def test_default_sample_is_remade_when_an_older_generator_made_it():
    glob = default_sample.ensure_default_sample(n_rows=500, seed=3)
    folder = Path(glob).parent
    manifest = json.loads((folder / default_sample.SAMPLE_MANIFEST).read_text())
    assert manifest == {"rows": 500, "seed": 3, "generator_version": generate.GENERATOR_VERSION}
    first = (folder / "rides-00000-of-00001.csv").read_text()
    # An older sample (no manifest, other rows) is replaced, not reused.
    (folder / default_sample.SAMPLE_MANIFEST).unlink()
    (folder / "rides-00000-of-00001.csv").write_text("stale\n")
    assert default_sample.ensure_default_sample(n_rows=500, seed=3) == glob
    assert (folder / "rides-00000-of-00001.csv").read_text() == first
