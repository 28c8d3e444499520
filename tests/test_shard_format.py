"""Parquet shards (--shard_format parquet): the same values as the CSV shards, read by the trainer's reader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import preprocess
from taxifare_core.shard_format import PARQUET_SCHEMA, format_of, processed_table
from taxifare_core.storage import outputs
from taxifare_core.training import reader
from tests.shard_helpers import processed_rows, write_shards


def _sorted(features: np.ndarray, fares: np.ndarray) -> np.ndarray:
    """The rows (features then fare) in one canonical order, whatever order the shards hold them in."""
    rows = np.column_stack([features, fares])
    return rows[np.lexsort(rows.T[::-1])]


def _both_formats(rides, tmp_path) -> dict[str, dict[str, np.ndarray]]:
    """Preprocess `rides` into CSV and into Parquet shards; each split read back through the CSV glob."""
    found = {}
    for shard_format in ("csv", "parquet"):
        output = tmp_path / shard_format
        flags = ["--input", str(rides), "--output", str(output), "--shard_format", shard_format, "--quiet"]
        assert preprocess.main(flags) == 0
        found[shard_format] = {
            split: _sorted(*reader.read_rows(str(output / f"{split}-*.csv"), 10**9)) for split in ("train", "val")
        }
        suffixes = {format_of(path) for path in reader.shard_paths(str(output / "train-*.csv"))}
        assert suffixes == {shard_format}
    return found


def _assert_same_values(found):
    for split in ("train", "val"):
        csv_rows, parquet_rows = found["csv"][split], found["parquet"][split]
        assert len(csv_rows) > 0 and csv_rows.shape == parquet_rows.shape, split
        # Both read as float32: the CSV's decimal text and Parquet's float32 give the same numbers.
        np.testing.assert_allclose(parquet_rows, csv_rows, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_parquet_shards_hold_the_csv_shards_values_on_the_real_sample(real_sample_path, tmp_path):
    _assert_same_values(_both_formats(real_sample_path, tmp_path))


@pytest.mark.slow
def test_parquet_shards_hold_the_csv_shards_values_on_generated_rides(generated_rides_path, tmp_path):
    found = _both_formats(generated_rides_path, tmp_path)
    _assert_same_values(found)
    csv_bytes = sum(path.stat().st_size for path in (tmp_path / "csv").glob("run-*/train-*.csv"))
    parquet_bytes = sum(path.stat().st_size for path in (tmp_path / "parquet").glob("run-*/train-*.parquet"))
    assert parquet_bytes < csv_bytes / 2, (parquet_bytes, csv_bytes)


def _write_parquet(path, rows: np.ndarray, row_group_rows: int) -> None:
    with pq.ParquetWriter(path, PARQUET_SCHEMA) as writer:
        for start in range(0, len(rows), row_group_rows):
            writer.write_table(processed_table(rows[start : start + row_group_rows]))


def test_chunks_from_parquet_equal_chunks_from_csv_across_shards_and_row_groups(tmp_path):
    rows = processed_rows(2_500, seed=3)
    write_shards(tmp_path / "csv", rows, [1_000, 700, 800])
    (tmp_path / "parquet").mkdir()
    for index, (start, stop) in enumerate([(0, 1_000), (1_000, 1_700), (1_700, 2_500)]):
        _write_parquet(tmp_path / "parquet" / f"train-{index:05d}-of-00003.parquet", rows[start:stop], 300)
    from_csv = list(reader.iter_chunks(str(tmp_path / "csv" / "train-*.csv"), chunk_size=600, skip_rows=250))
    from_parquet = list(reader.iter_chunks(str(tmp_path / "parquet" / "train-*.parquet"), 600, skip_rows=250))
    assert [len(f) for f, _ in from_parquet] == [len(f) for f, _ in from_csv] == [600, 600, 600, 450]
    for (a, b), (c, d) in zip(from_csv, from_parquet):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    parquet_paths = reader.shard_paths(str(tmp_path / "parquet" / "train-*.parquet"))
    assert reader.estimate_rows(parquet_paths) == 2_500  # exact: the footers' row counts
    csv_estimate = reader.estimate_rows(reader.shard_paths(str(tmp_path / "csv" / "train-*.csv")))
    assert abs(csv_estimate - 2_500) < 250  # the first MB's bytes per line


def test_a_parquet_file_of_other_columns_is_refused_in_one_line(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"fare": [1.0, 2.0]}), path)
    with pytest.raises(reader.ShardError, match="not a processed Parquet shard \\(1 columns, 66 expected\\)"):
        list(reader.iter_chunks(str(tmp_path / "train-*.parquet"), 10, prefetch=0))
    path.write_bytes(b"not parquet at all")
    with pytest.raises(reader.ShardError, match="not a processed Parquet shard"):
        reader.read_rows(str(tmp_path / "train-*.parquet"), 10)


def test_a_csv_glob_names_a_published_runs_parquet_shards_only_when_it_has_no_csv(tmp_path):
    run = tmp_path / "run-20261204T120000.000000Z-abcdef"
    run.mkdir()
    (run / "train-00000-of-00001.parquet").write_bytes(b"x" * 3)
    (run / "errors-00000-of-00001.jsonl").write_bytes(b"")
    manifest = {"run": run.name, "files": outputs.run_files(str(tmp_path), run.name)}
    (tmp_path / "summary.json").write_text(json.dumps({outputs.MANIFEST_KEY: manifest}))
    assert outputs.resolve(str(tmp_path / "train-*.csv")) == [str(run / "train-00000-of-00001.parquet")]
    assert outputs.resolve(str(tmp_path / "errors-*.csv")) == []  # no .parquet twin either
    assert outputs.resolve(str(tmp_path / "errors-*.jsonl")) == [str(run / "errors-00000-of-00001.jsonl")]
