"""The streaming shard reader: fixed-size chunks across shards, resume offsets, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from shard_helpers import processed_rows, write_shards
from taxifare_core import contract
from taxifare_core.training import reader


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """21 processed rows."""
    return processed_rows(21)


@pytest.fixture
def shards(tmp_path, rows):
    """Three shards of 7, 5 and 9 rows, plus an empty one (Beam can write those)."""
    write_shards(tmp_path, rows, [7, 0, 5, 9])
    return str(tmp_path / "train-*.csv")


def _stack(chunks):
    chunks = list(chunks)
    return [len(y) for _, y in chunks], np.vstack([x for x, _ in chunks]), np.concatenate([y for _, y in chunks])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_chunks_follow_chunk_size_across_shards(shards, rows, prefetch):
    sizes, features, fares = _stack(reader.iter_chunks(shards, chunk_size=4, prefetch=prefetch))
    assert sizes == [4, 4, 4, 4, 4, 1]
    assert features.shape == (21, contract.N_FEATURES) and features.dtype == np.float32
    np.testing.assert_allclose(features, rows[:, :-1], atol=contract.PROCESSED_TOLERANCE)
    np.testing.assert_allclose(fares, rows[:, -1], atol=contract.PROCESSED_TOLERANCE)


def test_one_chunk_when_chunk_size_exceeds_data(shards):
    sizes, _, _ = _stack(reader.iter_chunks(shards, chunk_size=1000))
    assert sizes == [21]


def test_skip_rows_resumes_mid_shard(shards, rows):
    sizes, features, fares = _stack(reader.iter_chunks(shards, chunk_size=4, skip_rows=10))
    assert sizes == [4, 4, 3]
    np.testing.assert_allclose(fares, rows[10:, -1], atol=contract.PROCESSED_TOLERANCE)
    np.testing.assert_allclose(features, rows[10:, :-1], atol=contract.PROCESSED_TOLERANCE)


def test_chunks_are_independent_buffers(shards):
    first, second = [x for x, _ in reader.iter_chunks(shards, chunk_size=4)][:2]
    assert not np.shares_memory(first, second)


def test_read_rows_is_bounded(shards, rows):
    features, fares = reader.read_rows(shards, max_rows=8)
    assert features.shape == (8, contract.N_FEATURES)
    np.testing.assert_allclose(fares, rows[:8, -1], atol=contract.PROCESSED_TOLERANCE)


def test_no_matching_shard_is_a_clear_error(tmp_path):
    with pytest.raises(reader.ShardError, match="no file matches"):
        list(reader.iter_chunks(str(tmp_path / "nothing-*.csv"), chunk_size=4))


def test_wrong_column_count_is_a_clear_error(tmp_path):
    (tmp_path / "train-00000-of-00001.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(reader.ShardError, match="train-00000-of-00001.csv"):
        list(reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=4))


def test_text_in_a_shard_is_a_clear_error(tmp_path, rows):
    path = write_shards(tmp_path, rows[:3], [3])[0]
    lines = path.read_text().splitlines()
    lines[1] = ",".join(["x"] * contract.N_PROCESSED_COLUMNS)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(reader.ShardError, match="not a processed CSV"):
        list(reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=4))


def _spell_one_hots_as_floats(path, from_line: int) -> None:
    """Rewrite a shard's lines from `from_line` on with every value as a float ("1.0", "0.0")."""
    lines = path.read_text().splitlines()
    lines[from_line:] = [
        ",".join(f"{float(v):.1f}" if "." not in v else v for v in line.split(",")) for line in lines[from_line:]
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("from_line", [0, 150])
def test_one_hots_written_as_floats_are_read_all_the_same(tmp_path, monkeypatch, from_line):
    """Another writer's "1.0" one-hots, from the start or past the first blocks, lose and repeat no row."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)  # many blocks, so the odd rows come after some
    rows = processed_rows(300)
    path = write_shards(tmp_path, rows, [300])[0]
    _spell_one_hots_as_floats(path, from_line)
    sizes, features, fares = _stack(reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=64))
    assert sum(sizes) == 300
    np.testing.assert_allclose(features, rows[:, :-1], atol=contract.PROCESSED_TOLERANCE)
    np.testing.assert_allclose(fares, rows[:, -1], atol=contract.PROCESSED_TOLERANCE)


def test_empty_value_in_a_one_hot_column_is_a_clear_error(tmp_path, rows):
    path = write_shards(tmp_path, rows[:3], [3])[0]
    lines = path.read_text().splitlines()
    values = lines[1].split(",")
    values[contract.COLS_MONTH.start] = ""
    lines[1] = ",".join(values)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(reader.ShardError, match="line 2: empty or NaN value"):
        list(reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=4))


@pytest.mark.parametrize(
    "value, found",
    [
        ("inf", "non-finite value inf"),
        ("-inf", "non-finite value -inf"),
        ("1e39", "non-finite value inf"),
        ("nan", "empty or NaN value"),
    ],
)
def test_non_finite_value_names_the_shard_and_line(tmp_path, monkeypatch, value, found):
    """Past the first blocks of the second shard, so the line number counts rows of earlier blocks."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)
    rows = processed_rows(300)
    _, second = write_shards(tmp_path, rows, [100, 200])
    lines = second.read_text().splitlines()
    values = lines[149].split(",")
    values[contract.COL_MANHATTAN] = value
    lines[149] = ",".join(values)
    second.write_text("\n".join(lines) + "\n")
    for read in (
        lambda: list(reader.iter_chunks(str(tmp_path / "train-*.csv"), chunk_size=64)),
        lambda: reader.read_rows(str(tmp_path / "train-*.csv"), max_rows=1000),
    ):
        with pytest.raises(reader.ShardError) as refused:
            read()
        assert str(refused.value).startswith(f"{second}: line 150: {found}")
    assert reader.read_rows(str(tmp_path / "train-*.csv"), max_rows=100)[1].shape == (100,)  # before the bad line


def test_read_rows_allocates_for_the_rows_read_not_the_bound(shards, rows):
    """A bound far above the data (260 GB if preallocated) reads what there is."""
    features, fares = reader.read_rows(shards, max_rows=10**9)
    assert features.shape == (21, contract.N_FEATURES) and features.flags.c_contiguous
    np.testing.assert_allclose(fares, rows[:, -1], atol=contract.PROCESSED_TOLERANCE)
