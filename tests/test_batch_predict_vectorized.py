"""Batch prediction's vectorized steps write what the per-ride code wrote: CSV lines, keys, both parse paths."""

from __future__ import annotations

import csv
import io
import random

import numpy as np
import pyarrow as pa
import pytest

from pipelines import batch_predict
from pipelines.preprocessing.parse import RawBlock

HEADER = (
    "key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,dropoff_longitude,dropoff_latitude,"
    "passenger_count"
)
RIDE = "2009-06-15 17:26:21 UTC,-73.844311,40.721319,-73.84161,40.712278,1"


def _per_ride_lines(keys: list[str], fares: np.ndarray) -> str:
    """What format_predictions wrote before: one csv.writer row per ride."""
    return "\n".join(batch_predict._csv_line(key, f"{fare:.2f}") for key, fare in zip(keys, fares))


@pytest.mark.parametrize("key", ["plain", "a,b", 'q"x', "cr\rx", "lf\nx", "crlf\r\nx", '"', ",", " lead", "tail ", "é"])
def test_a_key_is_quoted_exactly_as_csv_writer_quotes_it(key):
    line = batch_predict.prediction_lines(pa.array([key]), np.array([12.5], dtype=np.float32))
    assert line == batch_predict._csv_line(key, "12.50")
    assert list(csv.reader(io.StringIO(line, newline=""))) == [[key, "12.50"]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fares_are_written_to_the_cent_as_python_formats_them(dtype):
    fares = np.array([0.125, 0.135, 2.675, 1.005, -0.004, -0.0, 0.0, 0.005, 0.015, 9.995, 123456.785, 1e17, -3e20])
    rng = np.random.default_rng(7)
    fares = np.concatenate([fares, rng.normal(12, 15, 5000), np.round(rng.normal(12, 15, 5000) * 200) / 200])
    fares = fares.astype(dtype)
    keys = [f"k{i}" for i in range(len(fares))]
    assert batch_predict.prediction_lines(pa.array(keys), fares) == _per_ride_lines(keys, fares)


def test_random_keys_and_fares_give_the_same_text_as_the_per_ride_writer():
    chars = ["a", "1", ",", '"', "\r", "\n", " ", "\t", "é", "\x00", "\u2028", ":"]
    rand = random.Random(3)
    keys = ["".join(rand.choice(chars) for _ in range(rand.randint(1, 6))) for _ in range(3000)]
    fares = np.random.default_rng(3).normal(10, 30, len(keys)).astype(np.float32)
    assert batch_predict.prediction_lines(pa.array(keys), fares) == _per_ride_lines(keys, fares)


def test_no_ride_gives_no_text():
    assert batch_predict.prediction_lines(pa.array([], pa.string()), np.array([], dtype=np.float32)) == ""


def test_ride_keys_strip_as_str_strip_and_name_blank_ones_by_line():
    keys = ["a1", " a2 ", "\u00a0a3\u2003", "\x1ca4\x1d", "  ", "", "a\tb", "x\n", "é"]
    numbers = np.arange(2, 2 + len(keys))
    got = batch_predict.ride_keys(pa.array(keys), numbers, "2015/rides.csv:").to_pylist()
    expected = [key.strip() or f"2015/rides.csv:{n}" for key, n in zip(keys, numbers)]
    assert got == expected
    assert batch_predict.ride_keys(None, np.array([7, 9]), "").to_pylist() == ["7", "9"]


def _block(lines: list[str], first_line: int = 2, header: str = HEADER, ending: str = "\n") -> RawBlock:
    return RawBlock("rides.csv", first_line, tuple(header.split(",")), (ending.join(lines) + ending).encode())


def _both_paths(block: RawBlock, monkeypatch) -> tuple:
    """encode_block as it runs, and with Arrow's typed read turned off (the text path alone)."""
    fast = batch_predict.encode_block(block, name_by_file=True)
    with monkeypatch.context() as patch:
        patch.setattr(batch_predict, "_typed_rides", lambda _: None)
        slow = batch_predict.encode_block(block, name_by_file=True)
    return fast, slow


DIRTY = [
    f"a1,4.5,{RIDE}",
    f",5.0,{RIDE}",  # no key: named by its line
    f"  ,5.0,{RIDE}",  # blank key
    "b1,5.0,2013-01-01 00:00:00 UTC,-73.98,41.70,-73.99,40.75,1",  # outside New York
    "b2,5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,9",  # passengers
    "b3,5.0,2013-01-01 00:00:00 UTC,NA,40.70,-73.99,40.75,1",  # missing
    "b4,5.0,2013-02-30 00:00:00 UTC,-73.98,40.70,-73.99,40.75,1",  # impossible date
    "b5,oops",  # field count
    "   ",  # a blank line
    f"b6,not a fare,{RIDE}",  # the fare is not read
    "b7,5.0,2013-01-01 00:00:00 UTC,inf,40.70,-73.99,40.75,1",  # not finite
]


@pytest.mark.parametrize(
    "extra, n_dead",
    [
        ([], 6),
        (["b8,5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,2.50"], 7),  # its reason quotes the text read
        (["b9,5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,two"], 7),  # Arrow cannot convert it
        (['"q,1",5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,1'], 6),  # quoted
    ],
)
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_arrows_typed_read_and_the_text_path_encode_a_block_alike(extra, n_dead, ending, monkeypatch):
    fast, slow = _both_paths(_block(DIRTY + extra, ending=ending), monkeypatch)
    assert fast[0].keys.to_pylist() == slow[0].keys.to_pylist()
    assert fast[0].keys.to_pylist()[:3] == ["a1", "rides.csv:3", "rides.csv:4"]
    np.testing.assert_array_equal(fast[0].features, slow[0].features)
    dead = list(csv.reader(io.StringIO("\n".join(fast[1]), newline="")))
    assert fast[1] == slow[1] and len(dead) == n_dead


def test_a_block_with_a_lone_cr_and_a_quoted_newline_is_numbered_as_the_text_path_numbers_it(monkeypatch):
    """Arrow splits a row at a lone CR and joins two lines at a quoted newline: together the counts agree,
    yet the lines between them shift by one on the typed read (a blank line read as a ride's). Such a block
    takes the text path, as it did before the typed read."""
    lines = [
        f'"lf\nx",4.5,{RIDE}',
        "b5,oops",
        "   ",
        f",4.5,{RIDE}",
        f"cr\rx,4.5,{RIDE}",
        "   ",
        f"a7,4.5,{RIDE}",
        "   ",
    ]
    fast, slow = _both_paths(_block(lines), monkeypatch)
    assert fast[0].keys.to_pylist() == slow[0].keys.to_pylist()
    assert fast[1] == slow[1]
