"""Each DoFn and composite of the preprocessing steps (pipelines.preprocessing).

Under TestPipeline + assert_that (main and dead-letter outputs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.preprocessing import parse as parse_module
from pipelines.preprocessing.bigquery_rows import (
    ParseRecordBatches,
    format_raw_csv,
    parse_rows,
)
from pipelines.preprocessing.clean import (
    CleanRides,
    FilterDateWindowFn,
    rides_to_tuples,
    tuples_to_rides,
)
from pipelines.preprocessing.encode import (
    EncodeRides,
    EncodeRidesFn,
    FormatCsvLines,
    FormatCsvLinesFn,
    ProcessedBatch,
    SplitTrainVal,
    encode_rides,
)
from pipelines.preprocessing.parse import (
    ParseCsvBlocks,
    RawBlock,
    SplitLines,
    _split_with_arrow,
    parse_block,
    split_lines,
)
from pipelines.preprocessing.pipeline import PreprocessRides
from pipelines.preprocessing.sources import plan_blocks, read_block
from pipelines.preprocessing.summary import counters_from_result
from pipelines.preprocessing.tags import (
    BAD_INPUT,
    DEAD_LETTER,
    OUTSIDE_DATE_RANGE,
    RAW,
    RIDES,
    ROWS_READ,
    TRAIN,
    TRAIN_ROWS,
    VAL,
    VAL_ROWS,
)
from taxifare_core import contract
from taxifare_core.features import encode_ride
from taxifare_core.parsing import parse_frame, parse_record

HEADER = ("key", *contract.RAW_COLUMNS, "extra")
GOOD = "k1,7.5,2013-07-06 17:18:00 UTC,-73.950655,40.783282,-73.984365,40.769802,1,x"


def ride_line(key="k", **values) -> str:
    """One CSV line in HEADER's layout: the key, `record(**values)`, an extra column."""
    return ",".join([str(key), *map(str, record(**values)), "extra"])


def block(lines, first_line=2, source="mem.csv") -> RawBlock:
    """A RawBlock of text lines."""
    return RawBlock(source, first_line, HEADER, ("\n".join(lines) + "\n").encode())


def rides(*records) -> pd.DataFrame:
    """Typed rides from raw dicts (parse_frame, the pipeline's own typing)."""
    raw = pd.DataFrame([{**dict(zip(contract.RAW_COLUMNS, r))} for r in records])
    typed, reasons = parse_frame(raw)
    assert reasons.isna().all()
    return typed[list(contract.RAW_COLUMNS)]


def record(
    fare=7.5,
    when="2013-07-06 17:18:00 UTC",
    plon=-73.950655,
    plat=40.783282,
    dlon=-73.984365,
    dlat=40.769802,
    passengers=1,
) -> tuple:
    """The seven raw values of one ride."""
    return (fare, when, plon, plat, dlon, dlat, passengers)


def pipeline() -> BeamTestPipeline:
    """A TestPipeline on the in-process engine (offline, no Prism download attempt)."""
    return BeamTestPipeline(runner="FnApiRunner")


def run_counters(build) -> dict:
    """Build a graph with `build(p)`, run it and return this pipeline's counters."""
    p = pipeline()
    build(p)
    result = p.run()
    result.wait_until_finish()
    return counters_from_result(result)


# --- parse + validate ---------------------------------------------------------------


def test_parse_csv_blocks_sends_each_bad_line_to_the_dead_letter_verbatim():
    lines = [
        ride_line("a", fare=5.0),
        "only,three,fields",
        ride_line("b", fare="abc"),
        ride_line("c", when="yesterday"),
        "",
        ride_line("d", fare=6.0, passengers=1.5),
        ride_line("e", fare=7.0, passengers=""),
    ]

    def build(p):
        out = p | beam.Create([block(lines, first_line=10)]) | ParseCsvBlocks()
        assert_that(
            out[RIDES] | beam.FlatMap(lambda f: f[contract.LABEL_COLUMN].tolist()), equal_to([5.0, 7.0]), label="Rides"
        )
        dead = out[DEAD_LETTER] | beam.FlatMap(str.splitlines) | beam.Map(json.loads)
        assert_that(
            dead | "Lines" >> beam.Map(lambda d: (d["line"], d["record"], d["source"])),
            equal_to(
                [
                    (11, "only,three,fields", "mem.csv"),
                    (12, lines[2], "mem.csv"),
                    (13, lines[3], "mem.csv"),
                    (15, lines[5], "mem.csv"),
                ]
            ),
            label="DeadLetter",
        )
        assert_that(
            dead | "Reasons" >> beam.Map(lambda d: d["reason"].split(":")[0]),
            equal_to(
                [
                    f"expected {len(HEADER)} fields, got 3",
                    "fare_amount",
                    "pickup_datetime",
                    "passenger_count",
                ]
            ),
            label="Reasons",
        )

    counters = run_counters(build)
    assert counters[ROWS_READ] == 6  # the blank line is not a row
    assert counters[BAD_INPUT] == 4


def test_fast_and_slow_parse_paths_agree():
    lines = [ride_line(str(i), fare=5 + i, passengers=1 + i % 6) for i in range(50)]
    lines[7] = ride_line("7", fare="")  # a missing value stays a ride (the missing rule drops it later)
    fast, dead_fast, read_fast = parse_block(block(lines))
    slow, dead_slow, read_slow = parse_block(block(lines[:20] + ["bad"] + lines[20:]))
    assert read_fast == 50 and read_slow == 51 and not dead_fast and len(dead_slow) == 1
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow.reset_index(drop=True), check_dtype=False)
    assert np.isnan(fast[contract.LABEL_COLUMN].iloc[7])


def test_blocks_planned_over_a_file_cover_every_line(tmp_path):
    path = tmp_path / "rides.csv"
    body = [ride_line(str(i), fare=5 + i) for i in range(23)]
    path.write_text(",".join(HEADER) + "\n" + "\n".join(body))  # no final newline
    spans = plan_blocks(str(path), block_rows=5)
    assert [s.first_line for s in spans] == [2, 7, 12, 17, 22]
    texts = [read_block(s).data.decode().splitlines() for s in spans]
    assert [len(t) for t in texts] == [5, 5, 5, 5, 3]
    assert sum(texts, []) == body


def test_parse_record_batches_reads_bigquery_shaped_rows():
    when = datetime(2013, 7, 6, 17, 18, tzinfo=UTC)
    good = dict(zip(contract.RAW_COLUMNS, record(when=when)))
    rows = [
        good,
        {**good, "fare_amount": "lots"},
        {k: v for k, v in good.items() if k != "passenger_count"},
        {**good, "pickup_datetime": None},
    ]

    def build(p):
        out = p | beam.Create(rows) | ParseRecordBatches("bq:raw_1k", batch_rows=10)
        assert_that(out[RIDES] | beam.Map(len), equal_to([2]), label="Rides")
        assert_that(out[RAW] | beam.Map(lambda text: len(text.splitlines())), equal_to([4]), label="Raw")
        dead = out[DEAD_LETTER] | beam.FlatMap(str.splitlines) | beam.Map(json.loads)
        assert_that(
            dead | beam.Map(lambda d: (d["source"], d["line"], d["reason"].split(":")[0])),
            equal_to(
                [
                    ("bq:raw_1k", None, "fare_amount"),
                    ("bq:raw_1k", None, "missing column(s)"),
                ]
            ),
            label="DeadLetter",
        )

    counters = run_counters(build)
    assert counters[ROWS_READ] == 4 and counters[BAD_INPUT] == 2


# --- filter + clean ---------------------------------------------------------------


def test_date_window_is_bigquery_between_of_midnights():
    batch = rides(
        record(when="2009-01-01 00:00:00 UTC"),  # first instant: kept
        record(when="2008-12-31 23:59:59 UTC"),  # before: out
        record(when="2015-01-01 00:00:00 UTC"),  # max_date means midnight: kept
        record(when="2015-01-01 00:00:01 UTC"),  # one second later: out
        record(when=""),  # missing: kept for the missing-value rule
    )

    def build(p):
        kept = p | beam.Create([batch]) | beam.ParDo(FilterDateWindowFn("2009-01-01", "2015-01-01"))
        assert_that(
            kept | beam.FlatMap(lambda f: [str(t) for t in f[contract.TIME_COLUMN]]),
            equal_to(["2009-01-01 00:00:00+00:00", "2015-01-01 00:00:00+00:00", "NaT"]),
        )

    assert run_counters(build)[OUTSIDE_DATE_RANGE] == 2


def test_clean_rides_counts_each_rule():
    batch = rides(
        record(),
        record(),  # a duplicate pair
        record(fare=""),  # missing
        record(plon=0, plat=0, dlon=0, dlat=0),  # zero coordinates
        record(passengers=0),
        record(passengers=8),  # passenger count
        record(fare=0),
        record(fare=400),  # fare
        record(plat=40.95),
        record(dlon=-73.6),  # latitude, longitude
        record(fare=12.0, plat=40.5, dlon=-74.3),  # inclusive bounds: kept
    )

    def build(p):
        kept = p | beam.Create([batch]) | CleanRides("batch")
        assert_that(kept | beam.FlatMap(lambda f: f[contract.LABEL_COLUMN].tolist()), equal_to([7.5, 12.0]))

    counters = run_counters(build)
    assert {rule: counters.get(rule, 0) for rule in contract.CLEANING_RULES} == {
        contract.RULE_DUPLICATE: 1,
        contract.RULE_MISSING: 1,
        contract.RULE_ZERO_COORDINATES: 1,
        contract.RULE_PASSENGER_COUNT: 2,
        contract.RULE_FARE: 2,
        contract.RULE_LATITUDE: 1,
        contract.RULE_LONGITUDE: 1,
    }


@pytest.mark.parametrize("mode, kept, duplicates", [("batch", 4, 1), ("global", 3, 2), ("none", 5, 0)])
def test_dedupe_modes(mode, kept, duplicates):
    # The same ride three times: twice in one batch, once in another; plus two distinct rides.
    first = rides(record(), record(), record(fare=9.0))
    second = rides(record(), record(fare=11.0))

    def build(p):
        out = p | beam.Create([first, second]) | CleanRides(mode, batch_rows=10)
        assert_that(out | beam.Map(len) | beam.CombineGlobally(sum), equal_to([kept]))

    assert run_counters(build).get(contract.RULE_DUPLICATE, 0) == duplicates


def test_rides_tuples_round_trip():
    batch = rides(record(), record(fare=9.25, when="2014-03-09 07:30:00 UTC", passengers=3))
    back = tuples_to_rides(list(rides_to_tuples(batch)))
    pd.testing.assert_frame_equal(back, batch.reset_index(drop=True), check_dtype=False)


# --- encode, split, format --------------------------------------------------------


def test_encode_rides_matches_the_per_ride_encoder():
    raws = [record(), record(fare=20.5, when="2010-11-07 05:59:00 UTC", passengers=6, dlon=-73.78, dlat=40.64)]
    batch = rides(*raws)

    expected = np.array([np.append(encode_ride(parse_record(dict(zip(contract.RAW_COLUMNS, r)))), r[0]) for r in raws])

    def matches_encode_ride(actual):
        rows = np.array(sorted(actual, key=lambda r: r[-1]))
        assert rows.shape == expected.shape
        assert np.abs(rows - expected).max() <= contract.PROCESSED_TOLERANCE

    def build(p):
        encoded = p | beam.Create([batch]) | EncodeRides()
        assert_that(encoded | beam.FlatMap(lambda b: b.rows.astype(np.float64).tolist()), matches_encode_ride)

    run_counters(build)


def test_split_train_val_at_val_start():
    batch = encode_rides(
        rides(
            record(fare=1.0, when="2014-11-30 23:59:59 UTC"),
            record(fare=2.0, when="2014-12-01 00:00:00 UTC"),
            record(fare=3.0, when="2014-12-15 00:00:00 UTC"),
        )
    )

    def build(p):
        out = p | beam.Create([batch]) | SplitTrainVal("2014-12-01")
        fares = lambda b: b.rows[:, contract.N_FEATURES].tolist()  # noqa: E731
        assert_that(out[TRAIN] | "TrainFares" >> beam.FlatMap(fares), equal_to([1.0]), label="Train")
        assert_that(out[VAL] | "ValFares" >> beam.FlatMap(fares), equal_to([2.0, 3.0]), label="Val")

    counters = run_counters(build)
    assert counters[TRAIN_ROWS] == 1 and counters[VAL_ROWS] == 2


def test_format_csv_lines_one_text_element_per_batch():
    batch = encode_rides(rides(record(), record(fare=9.0)))

    def build(p):
        text = p | beam.Create([batch]) | FormatCsvLines()
        assert_that(
            text | beam.Map(lambda t: [len(line.split(",")) for line in t.split("\n")]),
            equal_to([[contract.N_PROCESSED_COLUMNS] * 2]),
        )

    run_counters(build)


def test_preprocess_rides_end_to_end_on_batches():
    batch = rides(
        record(fare=1.0, when="2014-06-01 10:00:00 UTC"),
        record(fare=2.0, when="2014-12-02 10:00:00 UTC"),
        record(fare=3.0, when="2016-01-01 10:00:00 UTC"),  # outside the window
        record(fare=0.0, when="2014-06-01 10:00:00 UTC"),  # fare rule
    )

    def build(p):
        out = p | beam.Create([batch]) | PreprocessRides("2009-01-01", "2015-01-01", "2014-12-01")
        last = lambda text: [float(line.split(",")[-1]) for line in text.split("\n")]  # noqa: E731
        assert_that(out[TRAIN] | "TrainFares" >> beam.FlatMap(last), equal_to([1.0]), label="Train")
        assert_that(out[VAL] | "ValFares" >> beam.FlatMap(last), equal_to([2.0]), label="Val")

    counters = run_counters(build)
    assert counters[OUTSIDE_DATE_RANGE] == 1 and counters[contract.RULE_FARE] == 1


def test_format_raw_csv_writes_the_contract_csv_form():
    typed = rides(record(), record(fare="", passengers="3", when="2014-01-02 03:04:05 UTC"))
    text = format_raw_csv(typed)
    assert text.split("\n") == [
        "7.5,2013-07-06 17:18:00 UTC,-73.950655,40.783282,-73.984365,40.769802,1",
        ",2014-01-02 03:04:05 UTC,-73.950655,40.783282,-73.984365,40.769802,3",
    ]
    assert format_raw_csv(typed.iloc[:0]) == ""


BQ_WHEN = datetime(2013, 7, 6, 17, 18, tzinfo=UTC)
BQ_GOOD = dict(zip(contract.RAW_COLUMNS, record(when=BQ_WHEN)))


@pytest.mark.parametrize("when", [BQ_WHEN, "2013-07-06 17:18:00 UTC", "2013-07-06T17:18:00Z"])
def test_parse_rows_types_columns_like_the_csv_path(when):
    """DIRECT_READ / Avro give datetimes, a JSON export gives text stamps: same typed rides either way."""
    rows = [{**BQ_GOOD, "pickup_datetime": when, "fare_amount": 5.0 + i} for i in range(5)]
    rows[2]["pickup_longitude"] = None  # missing: a ride (the missing-value rule drops it later)
    typed, dead, _ = parse_rows(rows, "bq")
    assert dead == []
    csv_typed, _, _ = parse_block(block([ride_line(fare=5.0 + i, plon="" if i == 2 else -73.950655) for i in range(5)]))
    pd.testing.assert_frame_equal(typed.reset_index(drop=True), csv_typed.reset_index(drop=True))


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"fare_amount": "abc"}, "fare_amount: expected a number, got 'abc'"),
        ({"passenger_count": 1.5}, "passenger_count: expected a whole number, got 1.5"),
        ({"pickup_latitude": float("inf")}, "pickup_latitude: not a finite number"),
        ({"pickup_datetime": "yesterday"}, "pickup_datetime: unreadable timestamp 'yesterday'"),
        ({"pickup_datetime": 12.5}, "pickup_datetime: expected a timestamp, got 12.5"),
    ],
)
def test_parse_rows_sends_a_wrong_type_value_to_the_dead_letter(change, reason):
    rows = [BQ_GOOD, {**BQ_GOOD, **change}, BQ_GOOD]
    typed, dead, _ = parse_rows(rows, "bq:raw_1k")
    assert len(typed) == 2
    [line] = dead
    letter = json.loads(line)
    assert letter["reason"] == reason and letter["source"] == "bq:raw_1k"
    assert (
        json.loads(letter["record"])[next(iter(change))]
        == json.loads(json.dumps(change, default=str))[next(iter(change))]
        or "inf" in letter["record"]
    )


def test_parse_rows_sends_a_timestamp_outside_pandas_range_to_the_dead_letter():
    """A TIMESTAMP BigQuery holds but pandas cannot (year 2300): that row's reason, the batch goes on."""
    far = datetime(2300, 1, 6, 9, 50, 45, tzinfo=UTC)
    typed, dead, _ = parse_rows([BQ_GOOD, {**BQ_GOOD, "pickup_datetime": far}, BQ_GOOD], "bq:raw_1k")
    assert len(typed) == 2
    [line] = dead
    assert json.loads(line)["reason"].startswith("pickup_datetime: out of range")


def test_parse_record_batches_writes_the_raw_cache_from_the_same_batch():
    rows = [{**BQ_GOOD, "fare_amount": 5.0 + i} for i in range(25)] + [{**BQ_GOOD, "fare_amount": "abc"}]

    def build(p):
        out = p | beam.Create(rows) | ParseRecordBatches("bq:raw_1k", batch_rows=10)
        raw = out[RAW] | beam.FlatMap(str.splitlines)
        assert_that(
            raw | beam.Map(lambda line: tuple(line.split(",")[:2])),
            equal_to(
                [(str(5 + i), "2013-07-06 17:18:00 UTC") for i in range(25)] + [("abc", "2013-07-06 17:18:00 UTC")]
            ),
            label="RawFares",
        )

    counters = run_counters(build)
    assert counters[ROWS_READ] == 26 and counters[BAD_INPUT] == 1


def test_importing_the_pipeline_never_imports_tensorflow():
    code = "import sys, pipelines.preprocess, pipelines.preprocessing.pipeline; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_formatting_gives_core_format_csv_text(threads):
    from taxifare_core import generate
    from taxifare_core.cleaning import clean
    from taxifare_core.features import format_csv

    typed, reasons = parse_frame(generate.generate_rides(50_000, seed=9))
    batch = encode_rides(clean(typed[reasons.isna()]).kept)
    fn = FormatCsvLinesFn(threads)
    fn.setup()
    try:
        (text,) = list(fn.process(batch))
    finally:
        fn.teardown()
    assert text == format_csv(batch.rows)
    assert not list(fn.process(ProcessedBatch(batch.rows[:0], batch.pickup_ns[:0])))


def test_threaded_encoding_gives_the_same_rows():
    from taxifare_core import generate
    from taxifare_core.cleaning import clean

    typed, reasons = parse_frame(generate.generate_rides(50_000, seed=9))
    kept = clean(typed[reasons.isna()]).kept
    outputs = []
    for threads in (1, 2):
        fn = EncodeRidesFn(threads)
        fn.setup()
        (batch,) = list(fn.process(kept))
        fn.teardown()
        outputs.append(batch)
    np.testing.assert_array_equal(outputs[0].rows, outputs[1].rows)
    np.testing.assert_array_equal(outputs[0].pickup_ns, outputs[1].pickup_ns)


def arrow_csv_writer_text(rows: np.ndarray) -> str:
    """The reference text: all 66 float32 columns through Arrow's CSV writer."""
    import io

    import pyarrow.csv as arrow_csv

    table = pa.Table.from_arrays(
        [pa.array(rows[:, j]) for j in range(rows.shape[1])], names=[str(j) for j in range(rows.shape[1])]
    )
    buffer = io.BytesIO()
    arrow_csv.write_csv(table, buffer, arrow_csv.WriteOptions(include_header=False))
    return buffer.getvalue().decode().rstrip("\n")


def test_core_format_csv_is_byte_for_byte_arrows_csv_writer():
    from taxifare_core import generate
    from taxifare_core.cleaning import clean
    from taxifare_core.features import format_csv

    typed, reasons = parse_frame(generate.generate_rides(30_000, seed=21))
    rows = encode_rides(clean(typed[reasons.isna()]).kept).rows
    assert (rows[:, contract.COLS_PICKUP_DISTRICT].sum(axis=1) == 0).any()  # the all-zero district text is used
    # Arrow's writer spells a one-hot 1.0 as "1" too, so the texts must be identical.
    assert format_csv(rows) == arrow_csv_writer_text(rows)
    assert format_csv(rows[7:8]) == arrow_csv_writer_text(rows[7:8])
    assert format_csv(rows[:0]) == ""
    odd = rows[:3].copy()
    odd[:, [contract.COL_DAYS, contract.N_FEATURES]] = [[1e-9, 1234.5], [-0.0, 3.0], [0.30000001, 1e7]]
    assert format_csv(odd) == arrow_csv_writer_text(odd)


def test_batch_coder_round_trips_and_estimates_without_pickling(monkeypatch):
    import pickle

    from pipelines.preprocessing.coders import BatchCoder

    coder = BatchCoder()
    frame = rides(record(), record(fare=9.0))
    batch = encode_rides(frame)
    block_ = block([GOOD])
    assert coder.decode(coder.encode(batch)).rows.tolist() == batch.rows.tolist()
    pd.testing.assert_frame_equal(coder.decode(coder.encode(frame)), frame)

    def no_pickling(*args, **kwargs):
        raise AssertionError("estimate_size pickled a batch")

    monkeypatch.setattr(pickle, "dumps", no_pickling)
    assert coder.estimate_size(batch) == batch.rows.nbytes + batch.pickup_ns.nbytes
    assert coder.estimate_size(block_) == len(block_.data)
    assert coder.estimate_size(frame) > 0


# --- splitting a block's lines (shared by preprocessing and batch prediction) ---

_HEADER = tuple(contract.RAW_COLUMNS)
_RIDE = "5.0,2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,1"


def _split(lines: list[str], first_line: int = 10) -> SplitLines:
    return split_lines(RawBlock("f.csv", first_line, _HEADER, "\r\n".join(lines).encode()))


def test_split_lines_numbers_lines_and_sets_aside_bad_field_counts():
    split = _split([_RIDE, "", "1,2", _RIDE.replace("5.0", "6.0"), "   ", "a,b,c,d,e,f,g,h"])
    assert split.line_numbers.tolist() == [10, 13]
    assert split.fields["fare_amount"].tolist() == ["5.0", "6.0"] and split.texts[1].startswith("6.0,")
    assert split.bad == [(12, "1,2", "expected 7 fields, got 2"), (15, "a,b,c,d,e,f,g,h", "expected 7 fields, got 8")]


def test_split_lines_falls_back_line_by_line_for_a_quoted_newline():
    lines = [_RIDE, '"5.0', '",2013-01-01 00:00:00 UTC,-73.98,40.70,-73.99,40.75,1', _RIDE]
    assert _split_with_arrow(list(enumerate(lines, start=10)), _HEADER) is None
    split = _split(lines)
    assert split.line_numbers.tolist() == [10, 13] and [line for line, _, _ in split.bad] == [11, 12]


def test_one_bad_line_keeps_the_rest_of_its_block_vectorized(monkeypatch):
    """Text in a number fails Arrow's typed read; the block is split by Arrow, not line by line."""
    monkeypatch.setattr(parse_module, "_split_line_by_line", None)  # any call would raise
    block = RawBlock("f.csv", 2, _HEADER, f"{_RIDE}\n{_RIDE.replace('5.0', 'five')}\n{_RIDE}\n1,2\n".encode())
    rides, dead, read = parse_block(block)
    assert read == 4 and len(rides) == 2
    assert sorted(json.loads(line)["line"] for line in dead) == [3, 5]


def test_bad_field_counts_alone_keep_the_typed_fast_path(monkeypatch):
    """Lines with another field count are set aside by Arrow's typed read, exactly numbered."""
    monkeypatch.setattr(parse_module, "split_lines", None)  # the text path would raise
    lines = [_RIDE, "1,2", _RIDE.replace("5.0", "6.0"), "a,b,c,d,e,f,g,h", _RIDE.replace("5.0", "7.0")]
    rides, dead, read = parse_block(RawBlock("f.csv", 20, _HEADER, ("\n".join(lines) + "\n").encode()))
    assert read == 5 and rides["fare_amount"].tolist() == [5.0, 6.0, 7.0]
    assert [(json.loads(d)["line"], json.loads(d)["record"]) for d in dead] == [(21, "1,2"), (23, "a,b,c,d,e,f,g,h")]
