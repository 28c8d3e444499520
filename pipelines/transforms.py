"""The preprocessing steps as Beam DoFns and composite PTransforms, working on batches.

Every element after the source is a *batch* of rides (a pandas DataFrame or a
`ProcessedBatch`), so the work is numpy over ~100k rows at a time through
`taxifare_core` and the per-element overhead of Beam is paid per batch, not per
row. Steps, each with a `Metrics.counter` in namespace `COUNTER_NAMESPACE`:

    RawBlock (CSV) | ParseCsvBlocks()         -> {"rides": typed DataFrames, "dead_letter": JSON lines}
    BigQuery dicts | ParseRecordBatches(src, n)   -> the same, plus "raw" CSV text (the raw cache)
    rides | PreprocessRides(min_date, max_date, val_start, dedupe) -> {"train", "val"} CSV text, i.e.
          | ParDo(FilterDateWindowFn(min_date, max_date))  counts "outside_date_range"
          | CleanRides(dedupe="batch"|"global"|"none")    counts each contract rule and "duplicate"
          | EncodeRides()                                 -> ProcessedBatch (n, 66) float32
          | SplitTrainVal(val_start)                      -> tagged "train" / "val", counted
          | FormatCsvLines()                              -> one text element per batch

Bad input (unparseable rows) leaves through the "dead_letter" output as JSON lines
{"source", "line", "record", "reason"}: nothing is lost and every row read ends in
exactly one counter. The plain functions behind the DoFns (`parse_block`,
`parse_records`, `encode_rides`, `format_lines`) serve callers outside Beam, such
as batch prediction. Importing this module never imports TensorFlow; the DoFns are
module-level classes (no save_main_session needed).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from operator import itemgetter

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.coders import BatchCoder, batches_of
from pipelines.sources import RawBlock, long_lines, read_csv_setting_aside, sort_out_lines, split_lines
from pipelines.statistics import record_since, stage_timer
from taxifare_core import contract
from taxifare_core.cleaning import clean, duplicate_mask
from taxifare_core.features import format_csv, joined_lines, processed_rows
from taxifare_core.parsing import MISSING_TEXT, MalformedRecord, clip_record, parse_frame, parse_record

COUNTER_NAMESPACE = "taxifare"
ROWS_READ = "rows_read"
BAD_INPUT = "bad_input"
OUTSIDE_DATE_RANGE = "outside_date_range"
TRAIN_ROWS = "train_rows"
VAL_ROWS = "val_rows"
# Rows dropped by a filter, in the order they are applied: the date window, then the contract's rules.
DROP_RULES = (OUTSIDE_DATE_RANGE, *contract.ROW_RULES)
DEDUPE_MODES = ("batch", "global", "none")

RIDES, DEAD_LETTER, TRAIN, VAL, RAW = "rides", "dead_letter", "train", "val", "raw"
# PreprocessRides' processed (not yet formatted) batches of each split, for the statistics.
TRAIN_BATCHES, VAL_BATCHES = "train_batches", "val_batches"
# Stages timed per batch (Metrics distributions, see pipelines.statistics.stage_timer), in pipeline order.
STAGES = ("parse", "filter_clean", "dedupe", "encode", "statistics", "format")
# Progress lines (one per block read); the CLI shows them on stderr for the in-process runner.
PROGRESS = logging.getLogger("pipelines.progress")

# Arrow's null test is case-sensitive: the usual spellings of parsing's missing-value words.
# Any other spelling fails the fast path, and the slow path (parse_frame) judges it the same way.
_NULL_TEXT = sorted({form for word in MISSING_TEXT for form in (word, word.upper(), word.capitalize())} | {"NaN"})
# The time stays text: parse_frame reads it with Arrow and checks what Arrow's own timestamp
# conversion would let through (Feb 30 rolled over to March) or refuse for the whole block (year 2300).
_CSV_TYPES = {
    **{column: pa.float64() for column in contract.NUMERIC_COLUMNS},
    contract.TIME_COLUMN: pa.string(),
}


def _counter(name: str):
    """A counter of this pipeline's namespace."""
    return Metrics.counter(COUNTER_NAMESPACE, name)


def utc_nanoseconds(day: date | datetime | str) -> int:
    """Midnight UTC of a date (or an aware datetime) as epoch nanoseconds, the typed frames' unit."""
    stamp = pd.Timestamp(day)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def dead_letter_line(source: str, line: int | None, record: str, reason: str) -> str:
    """One JSON line of the dead letter (a record over parsing.MAX_RECORD_CHARS is cut, its reason says so)."""
    record, reason = clip_record(record, reason)
    return json.dumps({"source": source, "line": line, "record": record, "reason": reason})


def empty_rides() -> pd.DataFrame:
    """A typed rides frame with no rows."""
    frame = pd.DataFrame({column: np.empty(0, dtype=np.float64) for column in contract.NUMERIC_COLUMNS})
    frame[contract.TIME_COLUMN] = pd.Series([], dtype="datetime64[ns, UTC]")
    return frame[list(contract.RAW_COLUMNS)]


# --- parse + validate ----------------------------------------------------------


# Arrow's typed read: the contract's types, parsing's missing-value words.
_TYPED_CSV = pacsv.ConvertOptions(
    column_types=_CSV_TYPES,
    include_columns=list(contract.RAW_COLUMNS),
    null_values=_NULL_TEXT,
    strings_can_be_null=True,
)
# Arrow's strings handed to parse_frame as Arrow-backed columns (no Python string per row).
_ARROW_STRINGS = {pa.string(): pd.ArrowDtype(pa.string())}.get


def _has_nan_text(table: pa.Table) -> bool:
    """True when a numeric column holds a NaN Arrow read from text not in the null list ("-nan"):
    the text path judges such spellings, so both paths give the same answer."""
    return any(pc.any(pc.is_nan(table[column])).as_py() for column in contract.NUMERIC_COLUMNS)


def _is_utf8(body: bytes) -> bool:
    """True when `body` is valid UTF-8 (pure ASCII is checked at memory speed). Arrow's handler of
    a line with another field count decodes it first, and prints a traceback if it cannot."""
    if body.isascii():
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _typed_block(block: RawBlock, body: bytes) -> tuple[pd.DataFrame, np.ndarray, list] | None:
    """Fast path: the block read by Arrow with the contract's types, lines with another field
    count set aside; (typed frame, line numbers, [(line, text, reason)]) or None if a line needs
    the text path (a value Arrow cannot convert, a blank line, a quoted newline, a line too long)."""
    if len(long_lines(body)) or not _is_utf8(body):
        return None
    read = read_csv_setting_aside(body, block.columns, _TYPED_CSV, use_threads=True)
    if read is not None and any(index is None for index, _ in read[1]):
        read = read_csv_setting_aside(body, block.columns, _TYPED_CSV)  # one thread numbers the lines
    if read is None:
        return None
    table, set_aside = read
    if _has_nan_text(table):
        return None
    # Arrow skips blank lines and splits quoted newlines: then line numbers need the text path.
    sorted_out = sort_out_lines(table, set_aside, body.count(b"\n") + 1, block.columns)
    if sorted_out is None:
        return None
    kept, aside = sorted_out
    lines = body.split(b"\n") if aside else []
    bad = [
        (block.first_line + index, lines[index].decode("utf-8", errors="replace").rstrip("\r"), reason)
        for index, reason in aside
    ]
    # A whitespace-only line is a blank line, not a row, as the text path sees it (Arrow counts it as one field).
    bad = [entry for entry in bad if entry[1].strip()]
    return table.to_pandas(types_mapper=_ARROW_STRINGS), block.first_line + kept, bad


def parse_block(block: RawBlock) -> tuple[pd.DataFrame, list[str], int]:
    """One CSV block -> (typed rides, dead-letter JSON lines, rows read).

    Rows read counts every non-blank line; each is either in the typed rides or
    in the dead letter with its file, line number, verbatim text and reason.
    """
    body = block.data[:-1] if block.data.endswith(b"\n") else block.data
    if not body.strip():
        return empty_rides(), [], 0
    typed_block = _typed_block(block, body)
    if typed_block is not None:
        frame, line_numbers, bad = typed_block
    else:
        split = split_lines(block)
        frame, line_numbers, bad = split.fields[list(contract.RAW_COLUMNS)], split.line_numbers, split.bad
    typed, reasons = parse_frame(frame)
    dead = [dead_letter_line(block.source, line, text, reason) for line, text, reason in bad]
    failed = reasons.notna().to_numpy()
    if failed.any():
        lines = body.split(b"\n")
        for position in np.flatnonzero(failed):
            line = int(line_numbers[position])
            text = lines[line - block.first_line].decode("utf-8", errors="replace").rstrip("\r")
            dead.append(dead_letter_line(block.source, line, text, reasons.iloc[position]))
        typed = typed[~failed]
    return typed[list(contract.RAW_COLUMNS)], dead, len(typed) + len(dead)


def _json_value(value):
    """A BigQuery value as JSON text can hold it (timestamps as ISO strings)."""
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


def _record_json(record) -> str:
    """A dict row as the dead letter's `record` text."""
    return json.dumps(record, default=_json_value)


# Python types a BigQuery column may hold, by column kind (bool is no number, as in parse_number).
_NUMBER_TYPES = frozenset({float, int, type(None)})
_STAMP_TYPES = frozenset({datetime, pd.Timestamp, type(None)})


def _typed_column(column: str, values: list):
    """One column's values converted in one call when their Python types allow it (numbers as
    float64, datetimes as datetime64 UTC); otherwise the objects, for parse_frame's text path
    (a STRING fare, text stamps from a JSON export) or its per-row reasons."""
    kinds = set(map(type, values))  # one C-level pass: the column's value types
    if column == contract.TIME_COLUMN:
        if kinds <= _STAMP_TYPES:
            try:
                return pd.Series(pd.to_datetime(values, utc=True))
            except (ValueError, OverflowError):
                pass  # a stamp outside pandas' range: parse_frame gives that row its reason
    elif kinds <= _NUMBER_TYPES:
        return pa.array(values, type=pa.float64()).to_numpy(zero_copy_only=False)
    return pd.Series(values, dtype=object)


def _column_frame(records: list) -> pd.DataFrame:
    """Dict rows -> a DataFrame for parse_frame, one pass per column (C-level `itemgetter`) and each
    column converted in one call; KeyError if a row lacks a column."""
    return pd.DataFrame({
        column: _typed_column(column, list(map(itemgetter(column), records))) for column in contract.RAW_COLUMNS
    })


def _parse_one_by_one(records: list, source: str) -> tuple[pd.DataFrame, list[str], list]:
    """The fallback when a batch mixes value types parse_frame cannot take at once: parse_record per row."""
    dead, good, bad = [], [], []
    for record in records:
        try:
            good.append(parse_record(record))
        except MalformedRecord as error:
            dead.append(dead_letter_line(source, None, _record_json(record), error.reason))
            bad.append(record)
    if not good:
        return empty_rides(), dead, bad
    typed, _ = parse_frame(pd.DataFrame(good, columns=list(contract.RAW_COLUMNS)))
    return typed, dead, bad


def parse_records_keeping_bad(records: list[dict], source: str) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """parse_records, plus the rows that went to the dead letter (for the raw cache)."""
    dead, bad = [], []
    try:
        raw = _column_frame(records)
    except KeyError:
        complete = []
        for record in records:
            absent = [column for column in contract.RAW_COLUMNS if column not in record]
            if absent:
                dead.append(dead_letter_line(source, None, _record_json(record),
                                             f"missing column(s): {', '.join(absent)}"))
                bad.append(record)
            else:
                complete.append(record)
        records = complete
        raw = _column_frame(records)
    if not records:
        return empty_rides(), dead, bad
    try:
        typed, reasons = parse_frame(raw)
    except MalformedRecord:
        typed, more, more_bad = _parse_one_by_one(records, source)
        return typed[list(contract.RAW_COLUMNS)], dead + more, bad + more_bad
    failed = reasons.notna().to_numpy()
    for position in np.flatnonzero(failed):
        dead.append(dead_letter_line(source, None, _record_json(records[position]), reasons.iloc[position]))
        bad.append(records[position])
    return typed[~failed][list(contract.RAW_COLUMNS)], dead, bad


def parse_records(records: list[dict], source: str) -> tuple[pd.DataFrame, list[str]]:
    """A batch of dict rows (BigQuery's output shape) -> (typed rides, dead-letter JSON lines).

    Columns are built in one pass each and typed in one call (TIMESTAMP datetimes, or
    text stamps, converted at once); a row without one of the seven columns, or with a
    value of the wrong type (text in a numeric column, an unreadable stamp), goes to the
    dead letter with its content as JSON and the reason.
    """
    typed, dead, _ = parse_records_keeping_bad(records, source)
    return typed, dead


def _raw_text(value) -> str:
    """A dead-letter row's value as raw CSV text (stamps in the contract's form, None empty)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is None else value.astimezone(timezone.utc)
        return stamp.strftime(contract.CSV_TIME_FORMAT)
    return str(value)


def format_raw_records(records: list) -> str:
    """Dict rows as raw CSV lines, value by value (the few rows of the dead letter; a missing column empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for record in records:
        writer.writerow([_raw_text(record.get(column)) for column in contract.RAW_COLUMNS])
    return buffer.getvalue().rstrip("\n")


def format_raw_csv(rides: pd.DataFrame) -> str:
    """Typed rides as the raw CSV form (the seven columns, `... UTC` stamps, empty when missing, no
    header): Arrow casts each column to text and joins the lines, as the processed shards are written."""
    if not len(rides):
        return ""
    pieces = []
    for column in contract.RAW_COLUMNS:
        values = pa.array(rides[column], from_pandas=True)  # NaN -> null -> empty field
        if column == contract.TIME_COLUMN:
            # UTC wall time to the second as "YYYY-MM-DD HH:MM:SS" (Arrow's cast: 50x faster than strftime).
            seconds = pc.cast(pc.cast(values, pa.timestamp("s", tz="UTC"), safe=False), pa.timestamp("s"))
            pieces.append(pc.binary_join_element_wise(pc.cast(seconds, pa.string()), "UTC", " "))
        elif column == contract.PASSENGER_COLUMN:
            pieces.append(pc.cast(pc.cast(values, pa.int64()), pa.string()))
        else:
            pieces.append(pc.cast(values, pa.string()))
    lines = pc.binary_join_element_wise(*pieces, ",", null_handling="replace", null_replacement="")
    return joined_lines(lines)


def _parsed_outputs(rides: pd.DataFrame, dead: list[str], bad_input):
    """A parse DoFn's outputs: dead-letter lines (counted as bad input) tagged, then the rides if any."""
    if dead:
        bad_input.inc(len(dead))
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, "\n".join(dead))
    if len(rides):
        yield rides


class ParseCsvBlockFn(beam.DoFn):
    """RawBlock -> typed rides DataFrame; unparseable lines to the "dead_letter" output."""

    def __init__(self):
        self.rows_read = _counter(ROWS_READ)
        self.bad_input = _counter(BAD_INPUT)
        self.timer = stage_timer("parse")

    def process(self, block: RawBlock):
        started = time.perf_counter()
        rides, dead, read = parse_block(block)
        record_since(self.timer, started)
        PROGRESS.info("read %s from line %d: %d rows, %d bad", block.source, block.first_line, read, len(dead))
        self.rows_read.inc(read)
        yield from _parsed_outputs(rides, dead, self.bad_input)


@dataclass(frozen=True)
class RecordBatch:
    """Up to `batch_rows` dict rows from BigQuery, as one element."""

    records: list

    def __len__(self) -> int:
        return len(self.records)

    @property
    def nbytes(self) -> int:
        """A size estimate (~8 bytes a value), for Beam's element sizes: a list of dicts would be
        encoded whole to be measured, its TIMESTAMP datetimes pickled one by one."""
        return 8 * len(contract.RAW_COLUMNS) * len(self.records)


beam.coders.registry.register_coder(RecordBatch, BatchCoder)


class BatchRecordsFn(beam.DoFn):
    """Dict rows -> RecordBatch elements of `batch_rows` rows (the last of a bundle may be smaller).

    Bounded reads live in the global window, where the last batch of a bundle is emitted.
    """

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows

    def start_bundle(self):
        self.records = []

    def process(self, record):
        self.records.append(record)
        if len(self.records) >= self.batch_rows:
            yield RecordBatch(self.records)
            self.records = []

    def finish_bundle(self):
        if self.records:
            yield WindowedValue(RecordBatch(self.records), GlobalWindow().max_timestamp(), (GlobalWindow(),))
        self.records = []


class ParseRecordBatchFn(beam.DoFn):
    """A RecordBatch of dict rows -> typed rides DataFrame; unparseable rows to the "dead_letter" output and,
    from the same batch, every row as raw CSV text to the "raw" output (the raw cache)."""

    def __init__(self, source: str):
        self.source = source
        self.rows_read = _counter(ROWS_READ)
        self.bad_input = _counter(BAD_INPUT)
        self.timer = stage_timer("parse")

    def process(self, batch: RecordBatch):
        records = batch.records
        self.rows_read.inc(len(records))
        started = time.perf_counter()
        rides, dead, bad = parse_records_keeping_bad(records, self.source)
        record_since(self.timer, started)
        # The cache holds every row read, so a re-run from it finds the same bad input.
        raw = "\n".join(text for text in (format_raw_csv(rides), format_raw_records(bad)) if text)
        if raw:
            yield beam.pvalue.TaggedOutput(RAW, raw)
        yield from _parsed_outputs(rides, dead, self.bad_input)


class ParseCsvBlocks(beam.PTransform):
    """RawBlocks -> {"rides": typed DataFrames, "dead_letter": JSON-lines text}."""

    def expand(self, blocks):
        outputs = blocks | "ParseCsvBlock" >> beam.ParDo(ParseCsvBlockFn()).with_outputs(DEAD_LETTER, main=RIDES)
        return {RIDES: batches_of(outputs[RIDES], pd.DataFrame), DEAD_LETTER: outputs[DEAD_LETTER]}


class ParseRecordBatches(beam.PTransform):
    """Dict rows (BigQuery) -> batches of `batch_rows` -> {"rides", "dead_letter"} as ParseCsvBlocks, plus
    {"raw"}: every row as raw CSV text (write with the raw header), from the same batches."""

    def __init__(self, source: str, batch_rows: int):
        super().__init__()
        self.source = source
        self.batch_rows = batch_rows

    def expand(self, records):
        outputs = (
            records
            | "BatchRecords" >> beam.ParDo(BatchRecordsFn(self.batch_rows)).with_output_types(RecordBatch)
            | "ParseRecordBatch" >> beam.ParDo(ParseRecordBatchFn(self.source)).with_outputs(
                DEAD_LETTER, RAW, main=RIDES)
        )
        return {RIDES: batches_of(outputs[RIDES], pd.DataFrame), DEAD_LETTER: outputs[DEAD_LETTER], RAW: outputs[RAW]}


# --- filter + clean --------------------------------------------------------------


class FilterDateWindowFn(beam.DoFn):
    """Keep rides with min_date <= pickup <= max_date (BigQuery's BETWEEN of two midnights).

    A ride without a pickup time is kept: the missing-value rule drops and counts it.
    """

    def __init__(self, min_date, max_date):
        self.low, self.high = utc_nanoseconds(min_date), utc_nanoseconds(max_date)
        self.outside = _counter(OUTSIDE_DATE_RANGE)
        self.timer = stage_timer("filter_clean")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        stamps = rides[contract.TIME_COLUMN]
        nanoseconds = stamps.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
        outside = stamps.notna().to_numpy() & ((nanoseconds < self.low) | (nanoseconds > self.high))
        if outside.any():
            self.outside.inc(int(outside.sum()))
            rides = rides[~outside]
        record_since(self.timer, started)
        if len(rides):
            yield rides


class CleanRidesFn(beam.DoFn):
    """Apply the contract's per-row rules (and, with dedupe, duplicates within the batch); count each rule.

    Duplicates are judged among the rows that pass the rules, as `clean` does, in a
    second step so each step's time is recorded apart.
    """

    def __init__(self, dedupe: bool):
        self.dedupe = dedupe
        self.dropped = {rule: _counter(rule) for rule in contract.CLEANING_RULES}
        self.clean_timer, self.dedupe_timer = stage_timer("filter_clean"), stage_timer("dedupe")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        result = clean(rides, dedupe=False)
        for rule, count in result.dropped.value_counts().items():
            self.dropped[rule].inc(int(count))
        kept = result.kept
        record_since(self.clean_timer, started)
        if self.dedupe and len(kept):
            started = time.perf_counter()
            repeats = duplicate_mask(kept)
            if repeats.any():
                self.dropped[contract.RULE_DUPLICATE].inc(int(repeats.sum()))
                kept = kept[~repeats]
            record_since(self.dedupe_timer, started)
        if len(kept):
            yield kept


def rides_to_tuples(rides: pd.DataFrame):
    """Each ride's seven columns as a hashable tuple (time as epoch ns), the key of exact deduplication."""
    columns = [
        rides[c].to_numpy(dtype="datetime64[ns]").view(np.int64).tolist()
        if c == contract.TIME_COLUMN
        else rides[c].to_numpy(dtype=np.float64).tolist()
        for c in contract.RAW_COLUMNS
    ]
    return zip(*columns)


def tuples_to_rides(rows: list) -> pd.DataFrame:
    """Tuples of rides_to_tuples back to a typed rides frame."""
    columns = list(zip(*rows)) if rows else [[] for _ in contract.RAW_COLUMNS]
    frame = {}
    for name, values in zip(contract.RAW_COLUMNS, columns):
        if name == contract.TIME_COLUMN:
            frame[name] = pd.to_datetime(np.asarray(values, dtype=np.int64), utc=True)
        else:
            frame[name] = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(frame)


class KeepOneCopyFn(beam.DoFn):
    """(ride tuple, copies) -> the ride once; counts the extra copies as "duplicate"."""

    def __init__(self):
        self.duplicates = _counter(contract.RULE_DUPLICATE)

    def process(self, element):
        ride, copies = element
        if copies > 1:
            self.duplicates.inc(copies - 1)
        yield ride


class DeduplicateGlobally(beam.PTransform):
    """Exact deduplication over the whole input: one element per ride through a shuffle, then re-batched.

    Memory on the local runners grows with the input (every ride is held by the
    shuffle); right for Dataflow, where the shuffle is a service.
    """

    def __init__(self, batch_rows: int):
        super().__init__()
        self.batch_rows = batch_rows

    def expand(self, rides):
        return (
            rides
            | "RidesToTuples" >> beam.FlatMap(rides_to_tuples)
            | "CountCopies" >> beam.combiners.Count.PerElement()
            | "KeepOneCopy" >> beam.ParDo(KeepOneCopyFn())
            | "Rebatch" >> beam.BatchElements(min_batch_size=self.batch_rows, max_batch_size=self.batch_rows)
            | "TuplesToRides" >> beam.Map(tuples_to_rides).with_output_types(pd.DataFrame)
        )


class CleanRides(beam.PTransform):
    """Typed rides -> clean rides, deduplicated per `dedupe` ("batch", "global" or "none")."""

    def __init__(self, dedupe: str = "batch", batch_rows: int = 100_000):
        super().__init__()
        if dedupe not in DEDUPE_MODES:
            raise ValueError(f"dedupe must be one of {DEDUPE_MODES}, got {dedupe!r}")
        self.dedupe = dedupe
        self.batch_rows = batch_rows

    def expand(self, rides):
        kept = rides | "ApplyRules" >> beam.ParDo(CleanRidesFn(dedupe=self.dedupe == "batch")).with_output_types(
            pd.DataFrame)
        if self.dedupe == "global":
            kept = kept | "DeduplicateGlobally" >> DeduplicateGlobally(self.batch_rows)
        return kept


# --- encode + split + format ---
# Encoding and formatting spend most of their time in numpy and Arrow,
# which release the GIL: big batches are cut in slices worked on by a few threads
# (same result, sooner). Below this many rows per slice, threads cost more than they save.
_MIN_ROWS_PER_THREAD = 20_000


def _thread_pool(threads: int | None) -> tuple[ThreadPoolExecutor | None, int]:
    """(a pool of `threads` or None for one, its size); default: the machine's cores, at most 4."""
    workers = max(1, min(threads or os.cpu_count() or 1, 4))
    return (ThreadPoolExecutor(workers) if workers > 1 else None), workers


def _slice_count(rows: int, workers: int) -> int:
    """How many slices to cut a batch of `rows` into for `workers` threads."""
    return max(1, min(workers, rows // _MIN_ROWS_PER_THREAD))


def _shutdown(pool: ThreadPoolExecutor | None) -> None:
    """Stop a pool made by _thread_pool."""
    if pool is not None:
        pool.shutdown()


@dataclass(frozen=True)
class ProcessedBatch:
    """Processed rows (n, 66) float32 (65 features then fare) and each row's pickup time in epoch ns."""

    rows: np.ndarray
    pickup_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """Size of the arrays, for Beam's element size estimates."""
        return self.rows.nbytes + self.pickup_ns.nbytes


beam.coders.registry.register_coder(ProcessedBatch, BatchCoder)


def encode_rides(rides: pd.DataFrame) -> ProcessedBatch:
    """Clean rides -> their processed rows through taxifare_core (vectorized)."""
    stamps = rides[contract.TIME_COLUMN].dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ProcessedBatch(processed_rows(rides), stamps)


class EncodeRidesFn(beam.DoFn):
    """Clean rides DataFrame -> ProcessedBatch (the 65 features + fare); big batches in parallel slices."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def setup(self):
        self.pool, self.workers = _thread_pool(self.threads)
        self.timer = stage_timer("encode")

    def process(self, rides: pd.DataFrame):
        started = time.perf_counter()
        slices = _slice_count(len(rides), self.workers)
        if slices == 1:
            batch = encode_rides(rides)
        else:
            bounds = np.linspace(0, len(rides), slices + 1).astype(int)
            parts = list(self.pool.map(encode_rides, [rides.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
            batch = ProcessedBatch(np.concatenate([p.rows for p in parts]), np.concatenate([p.pickup_ns for p in parts]))
        record_since(self.timer, started)
        yield batch

    def teardown(self):
        _shutdown(getattr(self, "pool", None))


class EncodeRides(beam.PTransform):
    """Clean rides -> ProcessedBatch elements."""

    def expand(self, rides):
        return rides | "EncodeFeatures" >> beam.ParDo(EncodeRidesFn()).with_output_types(ProcessedBatch)


class SplitTrainValFn(beam.DoFn):
    """ProcessedBatch -> "train" (pickup before val_start) and "val" (from val_start on) outputs, counted."""

    def __init__(self, val_start):
        self.val_start = utc_nanoseconds(val_start)
        self.train_rows = _counter(TRAIN_ROWS)
        self.val_rows = _counter(VAL_ROWS)

    def process(self, batch: ProcessedBatch):
        is_val = batch.pickup_ns >= self.val_start
        n_val = int(is_val.sum())
        if n_val < len(batch):
            self.train_rows.inc(len(batch) - n_val)
            yield beam.pvalue.TaggedOutput(TRAIN, ProcessedBatch(batch.rows[~is_val], batch.pickup_ns[~is_val]))
        if n_val:
            self.val_rows.inc(n_val)
            yield beam.pvalue.TaggedOutput(VAL, ProcessedBatch(batch.rows[is_val], batch.pickup_ns[is_val]))


class SplitTrainVal(beam.PTransform):
    """ProcessedBatches -> {"train", "val"} chronologically at `val_start` (a date, midnight UTC)."""

    def __init__(self, val_start):
        super().__init__()
        self.val_start = val_start

    def expand(self, batches):
        outputs = batches | "SplitByDate" >> beam.ParDo(SplitTrainValFn(self.val_start)).with_outputs(TRAIN, VAL)
        return {TRAIN: batches_of(outputs[TRAIN], ProcessedBatch), VAL: batches_of(outputs[VAL], ProcessedBatch)}


def format_lines(batch: ProcessedBatch) -> str:
    """A ProcessedBatch as CSV text: 66 columns, no header, float32 precision, lines joined by newline.

    The text of taxifare_core's format_csv.
    """
    return format_csv(batch.rows)


class FormatCsvLinesFn(beam.DoFn):
    """ProcessedBatch -> CSV text: one element per batch, or `pieces` elements (one per output shard).

    Beam's sink deals a fixed shard count round-robin, so cutting every batch in
    `num_shards` pieces keeps the shards balanced. Big batches are formatted in
    slices on a few threads; the text is the same.
    """

    def __init__(self, threads: int | None = None, pieces: int = 1):
        self.threads = threads
        self.pieces = max(1, pieces)

    def setup(self):
        self.pool, self.workers = _thread_pool(self.threads)
        self.timer = stage_timer("format")

    def process(self, batch: ProcessedBatch):
        if not len(batch):
            return
        started = time.perf_counter()
        slices = max(_slice_count(len(batch), self.workers), min(self.pieces, len(batch)))
        if slices == 1:
            texts = [format_csv(batch.rows)]
        else:
            parts = np.array_split(batch.rows, slices)
            texts = list(self.pool.map(format_csv, parts) if self.pool else map(format_csv, parts))
        if self.pieces == 1 and len(texts) > 1:
            texts = ["\n".join(texts)]
        record_since(self.timer, started)
        yield from (text for text in texts if text)

    def teardown(self):
        _shutdown(getattr(self, "pool", None))


class FormatCsvLines(beam.PTransform):
    """ProcessedBatches -> CSV text elements (many lines each), ready for WriteToText."""

    def __init__(self, threads: int | None = None, pieces: int = 1):
        super().__init__()
        self.threads = threads
        self.pieces = pieces

    def expand(self, batches):
        return batches | "FormatCsv" >> beam.ParDo(FormatCsvLinesFn(self.threads, self.pieces)).with_output_types(str)


class PreprocessRides(beam.PTransform):
    """Typed rides -> {"train", "val"} CSV text: date window, cleaning, dedupe, encode, split, format.

    Also {"train_batches", "val_batches"}: the split's ProcessedBatches before formatting,
    for the statistics (pipelines.statistics.ComputeStatistics).
    """

    def __init__(self, min_date, max_date, val_start, dedupe: str = "batch", batch_rows: int = 100_000,
                 num_shards: int = 0):
        super().__init__()
        self.min_date, self.max_date, self.val_start = min_date, max_date, val_start
        self.dedupe, self.batch_rows, self.num_shards = dedupe, batch_rows, num_shards

    def expand(self, rides):
        split = (
            rides
            | "FilterDateWindow" >> beam.ParDo(FilterDateWindowFn(self.min_date, self.max_date)).with_output_types(
                pd.DataFrame)
            | "Clean" >> CleanRides(self.dedupe, self.batch_rows)
            | "Encode" >> EncodeRides()
            | "Split" >> SplitTrainVal(self.val_start)
        )
        return {
            TRAIN: split[TRAIN] | "FormatTrain" >> FormatCsvLines(pieces=self.num_shards),
            VAL: split[VAL] | "FormatVal" >> FormatCsvLines(pieces=self.num_shards),
            TRAIN_BATCHES: split[TRAIN],
            VAL_BATCHES: split[VAL],
        }
