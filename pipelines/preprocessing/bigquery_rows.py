"""BigQuery's rows (one dict each) -> batches -> typed rides, the dead letter and the raw cache, from one batch.

    dict rows | ParseRecordBatches(source, n) -> {"rides", "dead_letter", "raw"}

Rows are batched once (`RecordBatch`, sized by nbytes so Beam never pickles every row to
measure it); each column is built in one pass and converted in one call; a row missing a
column or holding a value of the wrong type goes to the dead letter with its content.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.preprocessing.coders import BatchCoder, batches_of
from pipelines.preprocessing.parse import dead_letter_line, empty_rides, parsed_outputs
from pipelines.preprocessing.tags import (
    BAD_INPUT,
    DEAD_LETTER,
    RAW,
    RIDES,
    ROWS_READ,
    counter,
)
from pipelines.preprocessing.timers import record_since, stage_timer
from taxifare_core import contract
from taxifare_core.features import joined_lines
from taxifare_core.parsing import MalformedRecord, parse_frame, parse_record


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
    return pd.DataFrame(
        {column: _typed_column(column, list(map(itemgetter(column), records))) for column in contract.RAW_COLUMNS}
    )


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


def parse_rows(records: list[dict], source: str) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """A batch of dict rows (BigQuery's output shape) -> (typed rides, dead-letter JSON lines, the dead
    letter's rows, for the raw cache).

    Columns are built in one pass each and typed in one call (TIMESTAMP datetimes, or
    text stamps, converted at once); a row without one of the seven columns, or with a
    value of the wrong type (text in a numeric column, an unreadable stamp), goes to the
    dead letter with its content as JSON and the reason.
    """
    dead, bad = [], []
    try:
        raw = _column_frame(records)
    except KeyError:
        complete = []
        for record in records:
            absent = [column for column in contract.RAW_COLUMNS if column not in record]
            if absent:
                dead.append(
                    dead_letter_line(source, None, _record_json(record), f"missing column(s): {', '.join(absent)}")
                )
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


def _raw_text(value) -> str:
    """A dead-letter row's value as raw CSV text (stamps in the contract's form, None empty)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is None else value.astimezone(UTC)
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
        self.rows_read = counter(ROWS_READ)
        self.bad_input = counter(BAD_INPUT)
        self.timer = stage_timer("parse")

    def process(self, batch: RecordBatch):
        records = batch.records
        self.rows_read.inc(len(records))
        started = time.perf_counter()
        rides, dead, bad = parse_rows(records, self.source)
        record_since(self.timer, started)
        # The cache holds every row read, so a re-run from it finds the same bad input.
        raw = "\n".join(text for text in (format_raw_csv(rides), format_raw_records(bad)) if text)
        if raw:
            yield beam.pvalue.TaggedOutput(RAW, raw)
        yield from parsed_outputs(rides, dead, self.bad_input)


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
            | "ParseRecordBatch"
            >> beam.ParDo(ParseRecordBatchFn(self.source)).with_outputs(DEAD_LETTER, RAW, main=RIDES)
        )
        return {RIDES: batches_of(outputs[RIDES], pd.DataFrame), DEAD_LETTER: outputs[DEAD_LETTER], RAW: outputs[RAW]}
