"""CSV blocks -> typed rides: the parse step of preprocessing, and the line splitting batch prediction shares.

    RawBlock (CSV) | ParseCsvBlocks()   -> {"rides": typed DataFrames, "dead_letter": JSON lines}

Arrow reads a block with the contract's types; lines with another field count are set
aside, a value Arrow cannot convert sends the block to the text split and the vectorized
parser (`taxifare_core.parsing`), which gives each bad row its reason. Bad input leaves
through the "dead_letter" output as JSON lines {"source", "line", "record", "reason"}.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines import progress
from pipelines.preprocessing.coders import batches_of
from pipelines.preprocessing.tags import (
    BAD_INPUT,
    DEAD_LETTER,
    PROGRESS,
    RIDES,
    ROWS_READ,
    counter,
)
from pipelines.preprocessing.timers import record_since, stage_timer
from taxifare_core import contract
from taxifare_core.parsing import (
    MISSING_TEXT,
    MalformedRecord,
    clip_record,
    csv_fields,
    parse_frame,
)

# Arrow's null test is case-sensitive: the usual spellings of parsing's missing-value words.
# Any other spelling fails the fast path, and the slow path (parse_frame) judges it the same way.
_NULL_TEXT = sorted({form for word in MISSING_TEXT for form in (word, word.upper(), word.capitalize())} | {"NaN"})


# The time stays text: parse_frame reads it with Arrow and checks what Arrow's own timestamp
# conversion would let through (Feb 30 rolled over to March) or refuse for the whole block (year 2300).
_CSV_TYPES = {
    **{column: pa.float64() for column in contract.NUMERIC_COLUMNS},
    contract.TIME_COLUMN: pa.string(),
}


def dead_letter_line(source: str, line: int | None, record: str, reason: str) -> str:
    """One JSON line of the dead letter (a record over parsing.MAX_RECORD_CHARS is cut, its reason says so)."""
    record, reason = clip_record(record, reason)
    return json.dumps({"source": source, "line": line, "record": record, "reason": reason})


def empty_rides() -> pd.DataFrame:
    """A typed rides frame with no rows."""
    frame = pd.DataFrame({column: np.empty(0, dtype=np.float64) for column in contract.NUMERIC_COLUMNS})
    frame[contract.TIME_COLUMN] = pd.Series([], dtype="datetime64[ns, UTC]")
    return frame[list(contract.RAW_COLUMNS)]


# Arrow's typed read: the contract's types, parsing's missing-value words.
_TYPED_CSV = pacsv.ConvertOptions(
    column_types=_CSV_TYPES,
    include_columns=list(contract.RAW_COLUMNS),
    null_values=_NULL_TEXT,
    strings_can_be_null=True,
)


# Arrow's strings handed to parse_frame as Arrow-backed columns (no Python string per row).
_ARROW_STRINGS = {pa.string(): pd.ArrowDtype(pa.string())}.get


def typed_csv_options(columns: tuple[str, ...]) -> pacsv.ConvertOptions:
    """Arrow's typed read of `columns` (a header's, in its order): the contract's numeric columns as
    float64 with parsing's missing-value words null, the others as text, never null (parse_frame judges
    the time's text). Batch prediction's read: the fare is left out, whatever it holds."""
    return pacsv.ConvertOptions(
        column_types={
            column: pa.float64() if column in contract.NUMERIC_COLUMNS else pa.string() for column in columns
        },
        include_columns=list(columns),
        null_values=_NULL_TEXT,
        strings_can_be_null=False,
    )


def _has_nan_text(table: pa.Table) -> bool:
    """True when a numeric column holds a NaN Arrow read from text not in the null list ("-nan"):
    the text path judges such spellings, so both paths give the same answer."""
    return any(
        pc.any(pc.is_nan(table[column])).as_py() for column in contract.NUMERIC_COLUMNS if column in table.column_names
    )


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


def block_body(block: RawBlock) -> bytes:
    """The block's bytes without its final newline: what Arrow reads, one line per newline."""
    return block.data[:-1] if block.data.endswith(b"\n") else block.data


def line_text(lines: list[bytes], block: RawBlock, line: int) -> str:
    """Line `line` (numbered in its file) of the block's body split at newlines, as text without its CR."""
    return lines[line - block.first_line].decode("utf-8", errors="replace").rstrip("\r")


def typed_block(block: RawBlock, convert_options: pacsv.ConvertOptions) -> tuple[pd.DataFrame, np.ndarray, list] | None:
    """`_typed_block` for a whole block (its final newline aside) read with `convert_options`: the fast
    path batch prediction shares (typed frame, line numbers, [(line, text, reason)]), or None."""
    body = block_body(block)
    if not body.strip():
        return None
    return _typed_block(block, body, convert_options)


def _typed_block(
    block: RawBlock, body: bytes, convert_options: pacsv.ConvertOptions = _TYPED_CSV
) -> tuple[pd.DataFrame, np.ndarray, list] | None:
    """Fast path: the block read by Arrow with the contract's types, lines with another field
    count set aside; (typed frame, line numbers, [(line, text, reason)]) or None if a line needs
    the text path (a value Arrow cannot convert, a blank line, a quoted newline, a line too long)."""
    if len(long_lines(body)) or not _is_utf8(body):
        return None
    read = read_csv_setting_aside(body, block.columns, convert_options, use_threads=True)
    if read is not None and any(index is None for index, _ in read[1]):
        read = read_csv_setting_aside(body, block.columns, convert_options)  # one thread numbers the lines
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
        (block.first_line + index, line_text(lines, block, block.first_line + index), reason) for index, reason in aside
    ]
    # A whitespace-only line is a blank line, not a row, as the text path sees it (Arrow counts it as one field).
    bad = [entry for entry in bad if entry[1].strip()]
    return table.to_pandas(types_mapper=_ARROW_STRINGS), block.first_line + kept, bad


def parse_block(block: RawBlock) -> tuple[pd.DataFrame, list[str], int]:
    """One CSV block -> (typed rides, dead-letter JSON lines, rows read).

    Rows read counts every non-blank line; each is either in the typed rides or
    in the dead letter with its file, line number, verbatim text and reason.
    """
    body = block_body(block)
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
            dead.append(dead_letter_line(block.source, line, line_text(lines, block, line), reasons.iloc[position]))
        typed = typed[~failed]
    return typed[list(contract.RAW_COLUMNS)], dead, len(typed) + len(dead)


def parsed_outputs(rides: pd.DataFrame, dead: list[str], bad_input):
    """A parse DoFn's outputs: dead-letter lines (counted as bad input) tagged, then the rides if any."""
    if dead:
        bad_input.inc(len(dead))
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, "\n".join(dead))
    if len(rides):
        yield rides


class ParseCsvBlockFn(beam.DoFn):
    """RawBlock -> typed rides DataFrame; unparseable lines to the "dead_letter" output."""

    def __init__(self):
        self.rows_read = counter(ROWS_READ)
        self.bad_input = counter(BAD_INPUT)
        self.timer = stage_timer("parse")

    def process(self, block: RawBlock):
        started = time.perf_counter()
        rides, dead, read = parse_block(block)
        record_since(self.timer, started)
        PROGRESS.debug("read %s from line %d: %d rows, %d bad", block.source, block.first_line, read, len(dead))
        if progress.current is not None:  # set by the CLI of an in-process run: bytes of the input's total
            progress.current.advance(len(block.data), rows=read)
        self.rows_read.inc(read)
        yield from parsed_outputs(rides, dead, self.bad_input)


class ParseCsvBlocks(beam.PTransform):
    """RawBlocks -> {"rides": typed DataFrames, "dead_letter": JSON-lines text}."""

    def expand(self, blocks):
        outputs = blocks | "ParseCsvBlock" >> beam.ParDo(ParseCsvBlockFn()).with_outputs(DEAD_LETTER, main=RIDES)
        return {RIDES: batches_of(outputs[RIDES], pd.DataFrame), DEAD_LETTER: outputs[DEAD_LETTER]}


# A ride is ~150 bytes: a line longer than this is bad input (read whole, never parsed), so one
# huge field cannot crash the csv module (its field limit is 131,072) or stall Arrow.
MAX_LINE_BYTES = 100_000


@dataclass(frozen=True)
class RawBlock:
    """The raw bytes of one block of CSV lines (no header), with where they came from."""

    source: str
    first_line: int
    columns: tuple[str, ...]
    data: bytes

    @property
    def nbytes(self) -> int:
        """Size of the raw text, for Beam's element size estimates."""
        return len(self.data)


@dataclass(frozen=True)
class SplitLines:
    """A block's non-blank lines split into fields.

    `fields` holds, as text, the lines with the header's field count, one column
    per header column; `line_numbers` and `texts` say where each came from; `bad`
    lists the other lines as (line number, text, reason).
    """

    fields: pd.DataFrame
    line_numbers: np.ndarray
    texts: list[str]
    bad: list[tuple[int, str, str]]


def field_count_reason(columns: tuple[str, ...], found: int) -> str:
    """The dead letter's reason for a line with another field count than the header's."""
    return f"expected {len(columns)} fields, got {found}"


def read_csv_setting_aside(body: bytes, columns: tuple[str, ...], convert_options, use_threads: bool = False):
    """Arrow's read of header-less CSV lines, lines with another field count set aside.

    Returns (table, [(line index in `body`, or None when Arrow's threads lose count; fields found)]),
    or None when a value cannot be converted as `convert_options` asks.
    """
    set_aside: list[tuple[int | None, int]] = []

    def set_aside_row(row) -> str:
        set_aside.append((None if row.number is None else row.number - 1, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(column_names=list(columns), use_threads=use_threads),
            parse_options=pacsv.ParseOptions(invalid_row_handler=set_aside_row),
            convert_options=convert_options,
        )
    except pa.ArrowInvalid:
        return None
    return table, set_aside


def sort_out_lines(table, set_aside, line_count: int, columns: tuple[str, ...]):
    """(indices of the lines Arrow kept, [(index, reason)] of those it set aside), from
    read_csv_setting_aside; None when rows and set-aside lines do not add up to `line_count`
    (a blank line skipped, a quoted newline joining two lines) or Arrow lost count."""
    if table.num_rows + len(set_aside) != line_count or any(index is None for index, _ in set_aside):
        return None
    kept = np.delete(np.arange(line_count), [index for index, _ in set_aside])
    return kept, [(index, field_count_reason(columns, found)) for index, found in set_aside]


def _split_with_arrow(numbered: list[tuple[int, str]], columns: tuple[str, ...]) -> SplitLines | None:
    """Arrow splits every line at once, setting aside those with another field count;
    None when a quoted newline joins two lines into one row (line numbers would shift)."""
    body = "\n".join(text for _, text in numbered).encode()
    as_text = pacsv.ConvertOptions(column_types={column: pa.string() for column in columns})
    read = read_csv_setting_aside(body, columns, as_text)
    sorted_out = None if read is None else sort_out_lines(*read, len(numbered), columns)
    if sorted_out is None:
        return None
    kept, aside = sorted_out
    line_numbers = np.asarray([number for number, _ in numbered], dtype=np.int64)[kept]
    bad = [(*numbered[index], reason) for index, reason in aside]
    return SplitLines(read[0].to_pandas().astype(object), line_numbers, [numbered[i][1] for i in kept], bad)


def long_lines(data: bytes) -> np.ndarray:
    """Indices of the lines of `data` (split on \n) longer than MAX_LINE_BYTES, found with numpy."""
    if len(data) <= MAX_LINE_BYTES:
        return np.empty(0, dtype=np.int64)
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    lengths = np.diff(np.concatenate(([-1], ends, [len(data)]))) - 1
    return np.flatnonzero(lengths > MAX_LINE_BYTES)


def long_line_reason(length: int) -> str:
    """The dead letter's reason for a line over MAX_LINE_BYTES."""
    return f"line too long: {length:,} bytes (at most {MAX_LINE_BYTES:,}); no ride is that long"


def _split_line_by_line(numbered: list[tuple[int, str]], columns: tuple[str, ...]) -> SplitLines:
    """The csv module on each line: the fallback that numbers lines exactly whatever their quoting."""
    kept, rows, bad = [], [], []
    for number, text in numbered:
        try:
            fields = csv_fields(text)
        except MalformedRecord as error:
            bad.append((number, text, error.reason))
            continue
        if len(fields) != len(columns):
            bad.append((number, text, field_count_reason(columns, len(fields))))
            continue
        kept.append((number, text))
        rows.append(fields)
    return SplitLines(
        pd.DataFrame(rows, columns=list(columns), dtype=object),
        np.asarray([n for n, _ in kept], dtype=np.int64),
        [text for _, text in kept],
        bad,
    )


def split_lines(block: RawBlock) -> SplitLines:
    """A block's lines as text fields (the header's columns), numbered from `first_line`, blank lines left out."""
    too_long = long_lines(block.data)
    bad = []
    if len(too_long):  # set aside whole, as bytes: never decoded, split or parsed
        lines = block.data.split(b"\n")
        for index in too_long.tolist():
            bad.append(
                (
                    block.first_line + index,
                    lines[index].decode("utf-8", errors="replace"),
                    long_line_reason(len(lines[index])),
                )
            )
            lines[index] = b""
        text = b"\n".join(lines).decode("utf-8", errors="replace")
    else:
        text = block.data.decode("utf-8", errors="replace")
    numbered = [
        (block.first_line + offset, line.rstrip("\r")) for offset, line in enumerate(text.split("\n")) if line.strip()
    ]
    split = _split_with_arrow(numbered, block.columns) or _split_line_by_line(numbered, block.columns)
    if not bad:
        return split
    return SplitLines(split.fields, split.line_numbers, split.texts, bad + split.bad)
