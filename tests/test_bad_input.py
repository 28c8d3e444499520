"""Issue 9, the input side: every bad row reaches the dead letter with its line and reason, and the run goes on.

Pure functions (the block source's sniffing, compressed and CR-only files, parse_block),
a TestPipeline over a real file, and end-to-end runs of preprocessing and batch prediction.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import batch_predict, preprocess
from pipelines.predict import InvalidRideError, predict
from pipelines.preprocessing.parse import ParseCsvBlocks, RawBlock, parse_block
from pipelines.preprocessing.sources import (
    ReadCsvBlocks,
    plan_blocks,
    read_block,
    read_compressed_blocks,
    read_header,
    sniff,
)
from pipelines.preprocessing.tags import DEAD_LETTER, RIDES
from shard_helpers import saved_tiny_model
from taxifare_core import contract
from taxifare_core.generate import generate_rides
from taxifare_core.parsing import MAX_RECORD_CHARS, MalformedRecord
from taxifare_core.storage import outputs

HEADER = ",".join(contract.RAW_COLUMNS_WITH_KEY)
GOOD = "k,7.5,2013-07-06 17:18:00 UTC,-73.950655,40.783282,-73.984365,40.769802,1"

# (what is wrong, the line, the start of its reason): one line of each kind the issue names.
BAD_LINES = [
    ("time past 2262", GOOD.replace("2013-07-06", "2300-01-06"), "pickup_datetime: out of range"),
    ("year 1", GOOD.replace("2013-07-06", "0001-01-01"), "pickup_datetime: out of range"),
    ("year 9999", GOOD.replace("2013-07-06 17:18:00", "9999-12-31 23:59:59"), "pickup_datetime: out of range"),
    ("Feb 30", GOOD.replace("2013-07-06", "2013-02-30"), "pickup_datetime: invalid date"),
    ("24:00", GOOD.replace("17:18:00", "24:00:00"), "pickup_datetime: invalid time"),
    ("stray CR", GOOD.replace("-73.95", "-73\r.95"), "stray carriage return"),
    ("huge field", GOOD + "," + "9" * 3_000_000, "line too long"),
    ("1e309", GOOD.replace(",7.5,", ",1e309,"), "fare_amount: not a finite number"),
    ("inf", GOOD.replace(",7.5,", ",inf,"), "fare_amount: not a finite number"),
    ("-Infinity lat", GOOD.replace("40.783282", "-Infinity"), "pickup_latitude: not a finite number"),
    ("garbage", "\x00\x01\x1b[31mgarbage\x7f", "expected 8 fields, got 1"),
]


def ride_lines(n: int, seed: int = 11) -> list[str]:
    """`n` generated rides as CSV lines in HEADER's layout."""
    rides = generate_rides(n, seed=seed)
    return rides[list(contract.RAW_COLUMNS_WITH_KEY)].to_csv(header=False, index=False).splitlines()


def dirty_lines(n: int = 400) -> tuple[list[str], dict[int, tuple[str, str, str]]]:
    """Generated rides with every BAD_LINES kind mixed in, each bad line with its own key;
    {file line number: (kind, key, reason)}."""
    lines, injected = ride_lines(n), {}
    step = n // len(BAD_LINES)
    for index, (kind, line, reason) in enumerate(BAD_LINES):
        key = f"bad{index}"
        position = 7 + index * step + index  # earlier insertions shift later lines by one each
        lines.insert(position, key + line[1:] if line.startswith("k,") else line)
        injected[position + 2] = (kind, key, reason)
    return lines, injected


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes((newline.join([HEADER, *lines]) + newline).encode("utf-8"))
    return path


def dead_letter(folder: Path) -> dict[int, dict]:
    """The preprocessing dead letter by line number."""
    rows = [json.loads(line) for path in (outputs.resolve(str(folder / "errors-*.jsonl")) or []) for line in open(path)]
    return {row["line"]: row for row in rows}


# --- the block source ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("random.csv", bytes(range(256)) * 8, "is not a UTF-8 CSV file (looks binary)"),
        ("picture.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a UTF-8 CSV file (looks binary)"),
        ("utf16.csv", (HEADER + "\n" + GOOD + "\n").encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
        ("hidden.csv", gzip.compress((HEADER + "\n").encode()), "is gzip-compressed but not named .gz"),
        ("latin1.csv", "kéy,".encode("latin-1") + HEADER.encode() + b"\n", "is not a UTF-8 CSV file"),
        ("empty.csv", b"", "empty file"),
        ("one_long_line.csv", b"x" * 100_000, "is not a CSV file (no line end"),
        ("header_cr.csv", (HEADER.replace(",fare", ",fa\rre") + "\n").encode(), "stray carriage return"),
    ],
)
def test_files_that_are_not_utf8_csv_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MalformedRecord) as error:
        read_header(str(path))
    assert message in error.value.reason and str(path) in error.value.reason


def test_nul_and_latin1_bytes_after_the_header_are_bad_lines_not_a_binary_file(tmp_path):
    path = tmp_path / "rides.csv"
    path.write_bytes((HEADER + "\n" + GOOD + "\n").encode() + b"k,7\x00.5,\xe9\n" + (GOOD + "\n").encode())
    assert read_header(str(path))[0] == tuple(contract.RAW_COLUMNS_WITH_KEY)


def test_a_zip_and_a_folder_are_named_with_a_hint(tmp_path):
    with zipfile.ZipFile(tmp_path / "rides.zip", "w") as archive:
        archive.writestr("rides.csv", HEADER + "\n" + GOOD + "\n")
    with pytest.raises(MalformedRecord, match="is a zip archive: unzip it"):
        read_header(str(tmp_path / "rides.zip"))
    with pytest.raises(MalformedRecord, match=r"is a folder: give a glob such as .*/\*\.csv"):
        read_header(str(tmp_path))


def test_a_cr_only_file_is_read_as_lines(tmp_path):
    lines = ride_lines(23)
    plain = write(tmp_path / "lf.csv", lines)
    mac = write(tmp_path / "cr.csv", lines, newline="\r")
    assert sniff(str(mac)).newline == b"\r"
    as_lf = [(read_block(s).first_line, read_block(s).data) for s in plan_blocks(str(plain), block_rows=5)]
    as_cr = [(read_block(s).first_line, read_block(s).data) for s in plan_blocks(str(mac), block_rows=5)]
    assert as_cr == as_lf and [first for first, _ in as_cr] == [2, 7, 12, 17, 22]


@pytest.mark.parametrize("final_newline", [True, False])
def test_a_compressed_file_gives_the_plain_files_blocks(tmp_path, final_newline):
    text = "\n".join([HEADER, *ride_lines(23)]) + ("\n" if final_newline else "")
    (tmp_path / "rides.csv").write_text(text)
    (tmp_path / "rides.csv.gz").write_bytes(gzip.compress(text.encode()))
    plain = [read_block(span) for span in plan_blocks(str(tmp_path / "rides.csv"), block_rows=5)]
    packed = list(read_compressed_blocks(str(tmp_path / "rides.csv.gz"), block_rows=5))
    assert [(b.first_line, b.data) for b in packed] == [(b.first_line, b.data) for b in plain]


def test_a_corrupt_compressed_file_is_one_clear_error(tmp_path):
    path = tmp_path / "rides.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    with pytest.raises(MalformedRecord, match="cannot be decompressed to its end"):
        read_header(str(path))


# --- parse_block: every kind to the dead letter, whichever path the block takes --------------------


def _parsed(lines: list[str], first_line: int = 2):
    block = RawBlock("mem.csv", first_line, tuple(contract.RAW_COLUMNS_WITH_KEY), ("\n".join(lines) + "\n").encode())
    rides, dead, read = parse_block(block)
    return rides, {d["line"]: d for d in map(json.loads, dead)}, read


@pytest.mark.parametrize("kind, line, reason", BAD_LINES, ids=[kind for kind, _, _ in BAD_LINES])
def test_each_bad_line_is_dead_lettered_with_its_line_and_reason(kind, line, reason):
    good = ride_lines(30)
    rides, dead, read = _parsed([*good[:10], line, *good[10:]], first_line=5)
    assert read == 31 and len(rides) == 30 and list(dead) == [15]
    assert dead[15]["reason"].startswith(reason)
    if len(line) <= MAX_RECORD_CHARS:
        assert dead[15]["record"] == line.rstrip("\r")
    else:
        assert len(dead[15]["record"]) == MAX_RECORD_CHARS and "record cut to its first" in dead[15]["reason"]


@pytest.mark.parametrize("text", ["1e309", "inf", "-inf", "Infinity"])
def test_non_finite_numbers_are_bad_input_on_the_fast_and_the_text_path(text):
    good = ride_lines(20)
    line = GOOD.replace(",7.5,", f",{text},")
    _, fast, _ = _parsed([*good, line])  # Arrow's typed read takes the block
    _, slow, _ = _parsed([*good, line, "k,oops"])  # an unreadable line sends it through the text path
    assert fast[22]["reason"] == slow[22]["reason"] == "fare_amount: not a finite number"


def test_nan_spellings_agree_on_both_paths():
    good = ride_lines(20)
    lines = [GOOD.replace(",7.5,", f",{text},") for text in ("NaN", "nAn", "-nan", "")]
    fast_rides, fast, _ = _parsed([*good, *lines])
    slow_rides, slow, _ = _parsed([*good, *lines, "k,oops"])
    assert {n: d["reason"] for n, d in fast.items()} == {n: d["reason"] for n, d in slow.items() if n != 26}
    assert len(fast_rides) == len(slow_rides) == 23  # NaN, nAn and empty are missing values, -nan is unreadable


def test_invalid_utf8_lines_with_another_field_count_leave_nothing_on_stderr(monkeypatch):
    unraisable = []  # what Python would print as "Exception ignored in: ..." with a traceback
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    good = ride_lines(10)
    block = RawBlock(
        "mem.csv",
        2,
        tuple(contract.RAW_COLUMNS_WITH_KEY),
        ("\n".join(good) + "\n").encode() + b"\xff\xfe,garbage\n" + (GOOD + "\n").encode(),
    )
    rides, dead, read = parse_block(block)
    assert (len(rides), read) == (11, 12) and json.loads(dead[0])["line"] == 12
    assert not unraisable


def test_a_feb_30_is_never_rolled_over_to_march():
    rides, dead, _ = _parsed([GOOD.replace("2013-07-06", "2013-02-30"), GOOD.replace("2013-07-06", "2013-03-02")])
    assert list(dead) == [2] and rides[contract.TIME_COLUMN].dt.month.tolist() == [3]
    assert rides[contract.TIME_COLUMN].dt.day.tolist() == [2]


# --- a real file through Beam --------------------------------------------------------------------


def test_read_and_parse_a_dirty_file_under_testpipeline(tmp_path):
    lines, injected = dirty_lines(300)
    path = write(tmp_path / "dirty.csv", lines)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        parsed = p | ReadCsvBlocks(str(path), block_rows=40) | ParseCsvBlocks()
        dead = parsed[DEAD_LETTER] | beam.FlatMap(str.splitlines) | beam.Map(json.loads)
        assert_that(
            dead | beam.Map(lambda d: (d["line"], d["reason"].split(":")[0].split(" (")[0])),
            equal_to([(number, reason.split(":")[0].split(" (")[0]) for number, (_, _, reason) in injected.items()]),
            label="DeadLetter",
        )
        assert_that(parsed[RIDES] | beam.Map(len) | beam.CombineGlobally(sum), equal_to([300]), label="Rides")


# --- end to end: preprocessing, .csv.gz, binary input ------------------------------------------------


@pytest.mark.slow
def test_preprocessing_a_dirty_file_and_its_gzip_gives_the_same_shards(tmp_path):
    lines, injected = dirty_lines(400)
    plain = write(tmp_path / "rides.csv", lines)
    packed = tmp_path / "rides.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    folders = {}
    for path in (plain, packed):
        output = tmp_path / f"out_{path.name}"
        assert preprocess.main(["--input", str(path), "--output", str(output), "--block_rows", "64"]) == 0
        summary = json.loads((output / "summary.json").read_text())
        assert summary["balanced"] and summary["bad_input"] == len(injected)
        folders[path.name] = output
    a, b = (dead_letter(folders[name]) for name in ("rides.csv", "rides.csv.gz"))
    assert sorted(a) == sorted(b) == sorted(injected)
    assert {n: d["reason"] for n, d in a.items()} == {n: d["reason"] for n, d in b.items()}
    for n, (_, _, reason) in injected.items():
        assert a[n]["reason"].startswith(reason)
    for split in ("train", "val"):
        rows = [
            sorted(line for f in (outputs.resolve(str(folders[name] / f"{split}-*.csv")) or []) for line in open(f))
            for name in ("rides.csv", "rides.csv.gz")
        ]
        assert rows[0] == rows[1]
        assert rows[0] or split == "val"


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> tuple[str, str]:
    """A registry holding one briefly trained model: (registry folder, run name)."""
    root = tmp_path_factory.mktemp("registry")
    _, run_dir = saved_tiny_model(root, 200, seed=5, model_seed=1)
    return str(root), run_dir.rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False], ids=["binary file", "folder"])
@pytest.mark.parametrize("module", ["pipelines.preprocess", "pipelines.predict"])
def test_binary_input_or_a_folder_is_one_line_exit_2(tmp_path, binary, module, model_run):
    target = tmp_path / "x.csv" if binary else tmp_path
    if binary:
        target.write_bytes(bytes(range(256)) * 4)
    registry_flags = ["--registry", model_run[0]] if module == "pipelines.predict" else []
    done = subprocess.run(
        [sys.executable, "-m", module, "--input", str(target), "--output", str(tmp_path / "out"), *registry_flags],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    message = "is not a UTF-8 CSV file (looks binary)" if binary else "is a folder: give a glob"
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr and "Traceback" not in done.stderr


# --- prediction: batch and single rides ------------------------------------------------------------


@pytest.mark.slow
def test_batch_prediction_dead_letters_every_kind_and_reads_gzip(tmp_path, model_run):
    root, run = model_run
    lines, injected = dirty_lines(200)
    plain = write(tmp_path / "rides.csv", lines)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "rides.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    results = {}
    for name, source in (("plain", plain), ("gzip", tmp_path / "gz" / "rides.csv.gz")):
        output = tmp_path / f"pred_{name}"
        summary = batch_predict.run(str(source), str(output), run, root, block_rows=50)
        dead = {}
        for path in outputs.resolve(str(output / "dead_letter-*.csv")) or []:
            with open(path, newline="") as handle:
                for row in list(csv.reader(handle))[1:]:
                    dead[row[0]] = row[1]
        priced = [
            line
            for path in (outputs.resolve(str(output / "predictions-*.csv")) or [])
            for line in open(path).readlines()[1:]
        ]
        assert summary["predicted"] == len(priced) and summary["dead_letter"] == len(dead)
        results[name] = (dead, sorted(priced))
    assert results["plain"] == results["gzip"]
    dead = results["plain"][0]
    for number, (kind, key, reason) in injected.items():
        if reason.startswith("fare_amount"):
            continue  # the fare is what batch prediction computes: a bad one is ignored, as a missing one is
        # Lines the CSV splitter refuses are named by line number; parsed rides by their key.
        assert dead.get(key, dead.get(str(number), "")).startswith(reason), (kind, dead)
    assert len(dead) + len(results["plain"][1]) == len(lines)  # every line priced or in the dead letter


@pytest.mark.parametrize(
    "when, reason",
    [
        ("2300-01-06 09:50:45 UTC", "pickup_datetime: out of range"),
        ("0001-01-01 00:00:00 UTC", "pickup_datetime: out of range"),
        ("2013-02-30 10:00:00 UTC", "pickup_datetime: invalid date"),
    ],
)
def test_predict_api_gives_the_reason_for_impossible_times(model_run, when, reason):
    import pandas as pd

    root, run = model_run
    rides = pd.DataFrame([contract.EXAMPLE_RIDE, {**contract.EXAMPLE_RIDE, contract.TIME_COLUMN: when}])
    with pytest.raises(InvalidRideError) as error:
        predict(rides, run=run, registry_dir=root)
    assert list(error.value.reasons) == [1] and error.value.reasons[1].startswith(reason)
    fares = predict(rides, run=run, registry_dir=root, invalid="nan")
    assert np.isfinite(fares[0]) and np.isnan(fares[1])


@pytest.mark.parametrize("suffix, pack", [(".gz", gzip.compress), (".bz2", __import__("bz2").compress)])
def test_a_compressed_file_cut_short_is_one_clear_error(tmp_path, suffix, pack):
    data = pack(("\n".join([HEADER, *ride_lines(2000)]) + "\n").encode())
    whole, cut = tmp_path / f"whole.csv{suffix}", tmp_path / f"cut.csv{suffix}"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) // 2])
    assert read_header(str(whole))[0] == tuple(contract.RAW_COLUMNS_WITH_KEY)
    with pytest.raises(MalformedRecord, match="cannot be decompressed to its end"):
        read_header(str(cut))


def test_whitespace_only_lines_are_blank_lines_on_both_paths():
    good = ride_lines(10)
    lines = [*good[:5], "   ", "\t", *good[5:]]
    fast_rides, fast, fast_read = _parsed(lines)
    slow_rides, slow, slow_read = _parsed([*lines, GOOD.replace(",7.5,", ",x,")])
    assert not fast and list(slow) == [14]
    assert fast_read == 10 and slow_read == 11 and len(fast_rides) == len(slow_rides) == 10
