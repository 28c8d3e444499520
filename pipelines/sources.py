"""Where raw rides come from: CSV files read in row blocks, or the contract's BigQuery query.

CSV input is read as *blocks* of `block_rows` lines (one Beam element each), so the
rest of the pipeline works on batches with numpy instead of one row per element.
Blocks are planned per file (byte ranges of whole lines, with their first line
number), reshuffled so parallel workers share them, then read with `FileSystems`
(local paths and `gs://` alike). `split_lines` cuts a block into text fields with
Arrow, setting aside lines with another field count (preprocessing and batch
prediction both use it).

Compressed files (`.gz`, `.bz2`, ... as Beam's `CompressionTypes` names them by
extension) cannot be read at byte offsets: they are decompressed once, in a stream,
and cut at the same lines as the plain file, so they give the same blocks. A file
whose lines end with a lone `\r` (classic Mac) is read as lines split on `\r`, as
Python and pandas read it. A file that is not UTF-8 CSV text (binary, zip, UTF-16),
or a folder, is refused by `read_header` with one line saying what it looks like.

    >>> build_query("200k", "2009-01-01", "2015-01-01").splitlines()[1]
    'FROM `wagon-public-datasets`.taxifare.raw_200k'

    pipeline | ReadCsvBlocks("data/rides-*.csv", block_rows=100_000)   # -> RawBlock elements
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from datetime import date

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.coders import BatchCoder
from taxifare_core import contract
from taxifare_core.parsing import MalformedRecord, csv_fields, header_columns

# The origin course's CHUNK_SIZE: also the size of the batches that `--dedupe batch` dedupes within.
DEFAULT_BLOCK_ROWS = 100_000
_READ_CHUNK_BYTES = 16 * 1024 * 1024
# A ride is ~150 bytes: a line longer than this is bad input (read whole, never parsed), so one
# huge field cannot crash the csv module (its field limit is 131,072) or stall Arrow.
MAX_LINE_BYTES = 100_000
# How much of a file `read_header` looks at to judge whether it is CSV text.
_SNIFF_BYTES = 64 * 1024
# The first bytes of files that are not CSV text, and what to tell the user about each.
_MAGIC = (
    (b"\x1f\x8b", "is gzip-compressed but not named .gz: rename it to end in .gz"),
    (b"PK\x03\x04", "is a zip archive: unzip it and give the CSV files"),
    (b"\xff\xfe", "is UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "is UTF-16 text: save it as UTF-8"),
    (b"BZh", "is bzip2-compressed but not named .bz2: rename it to end in .bz2"),
)
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
# GCP project ids (optionally domain-scoped) and BigQuery dataset names.
_PROJECT_PATTERN = re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_DATASET_PATTERN = re.compile(r"[A-Za-z0-9_]{1,1024}")


class QueryError(ValueError):
    """A query parameter that is not allowed (bad date, size, project or dataset)."""


def parse_date(text: str, flag: str = "date") -> date:
    """A strict YYYY-MM-DD date; QueryError otherwise."""
    if not isinstance(text, str) or not _DATE_PATTERN.fullmatch(text):
        raise QueryError(f"{flag} must be a date as YYYY-MM-DD, got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{flag} is not a real date: {text!r}") from None


def build_query(
    data_size: str,
    min_date: str,
    max_date: str,
    project: str = contract.BQ_PROJECT,
    dataset: str = contract.BQ_DATASET,
) -> str:
    """The contract's query for one table size and date window; every part validated first.

    Only re-formatted, validated values reach the SQL text: dates are parsed and
    written back with `isoformat()`, the size comes from contract.DATA_SIZES.
    """
    if data_size not in contract.DATA_SIZES:
        raise QueryError(f"data size must be one of {', '.join(contract.DATA_SIZES)}, got {data_size!r}")
    low, high = parse_date(min_date, "min_date"), parse_date(max_date, "max_date")
    if low > high:
        raise QueryError(f"min_date {low} is after max_date {high}")
    if not isinstance(project, str) or not _PROJECT_PATTERN.fullmatch(project):
        raise QueryError(f"not a valid GCP project id: {project!r}")
    if not isinstance(dataset, str) or not _DATASET_PATTERN.fullmatch(dataset):
        raise QueryError(f"not a valid BigQuery dataset name: {dataset!r}")
    return contract.QUERY_TEMPLATE.format(
        columns=", ".join(contract.RAW_COLUMNS),
        project=project,
        dataset=dataset,
        data_size=contract.DATA_SIZES[contract.DATA_SIZES.index(data_size)],
        min_date=low.isoformat(),
        max_date=high.isoformat(),
    )


def table_name(data_size: str, project: str = contract.BQ_PROJECT, dataset: str = contract.BQ_DATASET) -> str:
    """The raw table a query reads, for reports: project.dataset.raw_SIZE."""
    return f"{project}.{dataset}.raw_{data_size}"


# --- CSV blocks ---------------------------------------------------------------


@dataclass(frozen=True)
class BlockSpan:
    """Where one block lies in a file: bytes [start, end) hold whole lines from `first_line` (1-based)."""

    path: str
    start: int
    end: int
    first_line: int
    columns: tuple[str, ...]
    newline: bytes = b"\n"


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


beam.coders.registry.register_coder(RawBlock, BatchCoder)


def _open(path: str):
    """A file opened as raw bytes (no decompression: byte offsets must stay real)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def is_compressed(path: str) -> bool:
    """True when Beam decompresses `path` by its extension (.gz, .bz2, .deflate, .zst, ...)."""
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


@dataclass(frozen=True)
class CsvLayout:
    """What `sniff` learns from a file's start: header columns, where the data begins, the line end."""

    columns: tuple[str, ...]
    offset: int  # bytes (of the decompressed text for a compressed file) before the first data line
    newline: bytes  # b"\n" (also for \r\n files) or b"\r" (classic Mac files)


def _not_csv(path: str, head: bytes) -> str | None:
    """Why a file's first bytes are not UTF-8 CSV text, or None when they may be.

    Only the magic numbers and the header line are judged: a NUL or latin-1 byte in a
    later line makes that line bad input, not the file.
    """
    for magic, why in _MAGIC:
        if head.startswith(magic):
            return f"{path} {why}"
    if b"\x00" in head.split(b"\n", 1)[0]:
        return f"{path} is not a UTF-8 CSV file (looks binary)"
    return None


def sniff(path: str, required: tuple[str, ...] = contract.RAW_COLUMNS) -> CsvLayout:
    """A CSV file's header columns, data offset and line end; MalformedRecord (one line, naming
    the file) for a folder, an empty or binary file, a bad header or a missing `required` column."""
    try:
        compression = CompressionTypes.AUTO if is_compressed(path) else CompressionTypes.UNCOMPRESSED
        with FileSystems.open(path, compression_type=compression) as handle:
            head = handle.read(_SNIFF_BYTES)
    except IsADirectoryError:
        raise MalformedRecord(f"{path} is a folder: give a glob such as {path.rstrip('/')}/*.csv") from None
    except (OSError, EOFError, ValueError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise MalformedRecord(f"{path} cannot be read: {error}") from None
    if not head.strip():
        raise MalformedRecord(f"{path}: empty file or empty header line")
    why = _not_csv(path, head)
    if why:
        raise MalformedRecord(why)
    # Lines end with a lone \r only when no \n comes at all: a stray \r in a \n file stays one bad line.
    newline = b"\r" if b"\r" in head.rstrip(b"\r") and b"\n" not in head else b"\n"
    end = head.find(newline)
    if end < 0 and len(head) == _SNIFF_BYTES:
        raise MalformedRecord(f"{path} is not a CSV file (no line end in its first {_SNIFF_BYTES:,} bytes)")
    first = head if end < 0 else head[:end + 1]
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedRecord(f"{path} is not a UTF-8 CSV file (looks binary)") from None
    if not text.strip():
        raise MalformedRecord(f"{path}: empty file or empty header line")
    try:
        columns = header_columns(text.rstrip("\r\n"), required=required)
    except MalformedRecord as error:
        raise MalformedRecord(f"{path}: {error.reason}") from None
    return CsvLayout(tuple(columns), len(first), newline)


def check_decompresses(path: str) -> None:
    """Read a compressed file to its end once; MalformedRecord when its stream is cut or corrupt.

    A broken stream found later, in a worker, would fail the whole run with a traceback:
    checked before the pipeline starts, it is one line (the price: one extra decompression).
    """
    # Python's own readers, which (unlike Beam's) raise at a stream cut short.
    reader = {
        CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw),
        CompressionTypes.BZIP2: bz2.BZ2File,
    }.get(CompressionTypes.detect_compression_type(path))
    if reader is None:
        return
    try:
        with _open(path) as raw, reader(raw) as handle:
            while handle.read(_READ_CHUNK_BYTES):
                pass
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise MalformedRecord(f"{path} cannot be decompressed to its end: {error or type(error).__name__}") from None


def read_header(path: str, required: tuple[str, ...] = contract.RAW_COLUMNS) -> tuple[tuple[str, ...], int]:
    """The CSV header's columns and the byte offset just after it; MalformedRecord (naming the
    file) if unusable or without a `required` column (see `sniff`), or a compressed file is broken."""
    if is_compressed(path):
        check_decompresses(path)
    layout = sniff(path, required)
    return layout.columns, layout.offset


def _cuts(chunk: bytes, newline: bytes, lines_in_block: int, block_rows: int) -> tuple[np.ndarray, int]:
    """Offsets just after every block_rows-th line end of `chunk` (counting on from `lines_in_block`
    lines already in the current block), and the count of lines in the block after the chunk."""
    ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == newline[0]) + 1
    return ends[block_rows - lines_in_block - 1::block_rows], (lines_in_block + len(ends)) % block_rows


def plan_blocks(path: str, block_rows: int, required: tuple[str, ...] = contract.RAW_COLUMNS) -> list[BlockSpan]:
    """Byte ranges of `block_rows` lines each over one file (one pass counting line ends)."""
    layout = sniff(path, required)
    columns, offset, newline = layout.columns, layout.offset, layout.newline
    spans, start, line, lines_in_block = [], offset, 2, 0
    position = offset
    with _open(path) as handle:
        handle.seek(offset)
        while chunk := handle.read(_READ_CHUNK_BYTES):
            cuts, lines_in_block = _cuts(chunk, newline, lines_in_block, block_rows)
            for end in cuts + position:
                spans.append(BlockSpan(path, start, int(end), line, columns, newline))
                line += block_rows
                start = int(end)
            position += len(chunk)
    if position > start:  # the last block, with or without a final newline
        spans.append(BlockSpan(path, start, position, line, columns, newline))
    return spans


def _with_line_feeds(data: bytes, newline: bytes) -> bytes:
    """A block's bytes with its line ends as \n, the one line end the parsers split on."""
    return data if newline == b"\n" else data.replace(newline, b"\n")


def read_block(span: BlockSpan) -> RawBlock:
    """The bytes of one planned block."""
    with _open(span.path) as handle:
        handle.seek(span.start)
        data = handle.read(span.end - span.start)
    return RawBlock(span.path, span.first_line, span.columns, _with_line_feeds(data, span.newline))


def read_compressed_blocks(path: str, block_rows: int, required: tuple[str, ...] = contract.RAW_COLUMNS):
    """RawBlocks of a compressed file, decompressed in one stream and cut at the lines plan_blocks
    would cut the plain file at (same first lines, same contents)."""
    layout = sniff(path, required)
    line, lines_in_block, pending = 2, 0, []
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        handle.read(layout.offset)
        while chunk := handle.read(_READ_CHUNK_BYTES):
            cuts, lines_in_block = _cuts(chunk, layout.newline, lines_in_block, block_rows)
            start = 0
            for end in cuts.tolist():
                pending.append(chunk[start:end])
                yield RawBlock(path, line, layout.columns, _with_line_feeds(b"".join(pending), layout.newline))
                line, start, pending = line + block_rows, end, []
            pending.append(chunk[start:])
    if any(pending):
        yield RawBlock(path, line, layout.columns, _with_line_feeds(b"".join(pending), layout.newline))


class PlanBlocksFn(beam.DoFn):
    """FileMetadata -> the BlockSpans of that file."""

    def __init__(self, block_rows: int = DEFAULT_BLOCK_ROWS, required: tuple[str, ...] = contract.RAW_COLUMNS):
        self.block_rows = block_rows
        self.required = required

    def process(self, metadata):
        if is_compressed(metadata.path):
            yield from read_compressed_blocks(metadata.path, self.block_rows, self.required)
        else:
            yield from plan_blocks(metadata.path, self.block_rows, self.required)


class ReadBlockFn(beam.DoFn):
    """BlockSpan -> RawBlock (a compressed file's blocks arrive read already)."""

    def process(self, span: BlockSpan | RawBlock):
        yield span if isinstance(span, RawBlock) else read_block(span)


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
    return SplitLines(pd.DataFrame(rows, columns=list(columns), dtype=object),
                      np.asarray([n for n, _ in kept], dtype=np.int64), [text for _, text in kept], bad)


def split_lines(block: RawBlock) -> SplitLines:
    """A block's lines as text fields (the header's columns), numbered from `first_line`, blank lines left out."""
    too_long = long_lines(block.data)
    bad = []
    if len(too_long):  # set aside whole, as bytes: never decoded, split or parsed
        lines = block.data.split(b"\n")
        for index in too_long.tolist():
            bad.append((block.first_line + index, lines[index].decode("utf-8", errors="replace"),
                        long_line_reason(len(lines[index]))))
            lines[index] = b""
        text = b"\n".join(lines).decode("utf-8", errors="replace")
    else:
        text = block.data.decode("utf-8", errors="replace")
    numbered = [
        (block.first_line + offset, line.rstrip("\r"))
        for offset, line in enumerate(text.split("\n")) if line.strip()
    ]
    split = _split_with_arrow(numbered, block.columns) or _split_line_by_line(numbered, block.columns)
    if not bad:
        return split
    return SplitLines(split.fields, split.line_numbers, split.texts, bad + split.bad)


class ReadCsvBlocks(beam.PTransform):
    """A file pattern (glob, local or gs://) -> RawBlock elements of `block_rows` lines.

    Every file's header must name the `required` columns (default: the raw table's).
    """

    def __init__(self, pattern: str | list[str], block_rows: int = DEFAULT_BLOCK_ROWS,
                 required: tuple[str, ...] = contract.RAW_COLUMNS):
        super().__init__()
        # A list: the files of a published output (taxifare_core.outputs.resolve), read as they are.
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        self.block_rows = block_rows
        self.required = tuple(required)

    def expand(self, pbegin):
        return (
            pbegin
            | "InputPattern" >> beam.Create(self.patterns)
            | "MatchFiles" >> fileio.MatchAll()
            | "PlanBlocks" >> beam.ParDo(PlanBlocksFn(self.block_rows, self.required))
            # Spread the blocks over workers (FnApiRunner processes, Dataflow VMs).
            | "SpreadBlocks" >> beam.Reshuffle()
            | "ReadBlocks" >> beam.ParDo(ReadBlockFn()).with_output_types(RawBlock)
        )


# The label of the BigQuery read in the preprocessing graph; runners name it in their errors.
READ_BIGQUERY_LABEL = "ReadBigQuery"
_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]\s*$")
_HTTP_ERROR_CONTENT = re.compile(r"content <(\{.*\})>", re.DOTALL)
_MAX_REASON_CHARS = 400


def _is_google_error(error: BaseException) -> bool:
    """True for the errors Google's clients raise (REST, gRPC, auth), by their module."""
    module = type(error).__module__ or ""
    return module.startswith(("apitools.", "google.api_core", "google.auth", "grpc"))


def _error_chain(error: BaseException):
    """The error, then its causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def bigquery_read_failure(error: BaseException, table: str, read_method: str) -> str | None:
    """One line saying that reading `table` with `read_method` failed and why, when `error` comes
    from the BigQuery read (its step named in the runner's message, or a Google client error in its
    chain); None for any other error, which the caller re-raises.

        >>> bigquery_read_failure(RuntimeError("ConnectionRefusedError: [Errno 111] Connection refused "
        ...     "[while running 'ReadBigQuery/Read/SDFBoundedSourceReader']"), "p.d.raw_1k", "EXPORT")
        'reading BigQuery table p.d.raw_1k (EXPORT) failed: ConnectionRefusedError: [Errno 111] Connection refused'
    """
    chain = list(_error_chain(error))
    from_read = any(f"'{READ_BIGQUERY_LABEL}/" in str(e) for e in chain) or any(map(_is_google_error, chain))
    if not from_read:
        return None
    text = str(error)
    content = _HTTP_ERROR_CONTENT.search(text)
    reason = None
    if content:  # apitools' HttpError: BigQuery's own message is in the JSON body
        try:
            reason = json.loads(content.group(1))["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = None
    if reason is None:
        lines = [line.strip() for line in _WHILE_RUNNING.sub("", text).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[:_MAX_REASON_CHARS] + "..."
    return f"reading BigQuery table {table} ({read_method}) failed: {reason}"


def read_from_bigquery(query: str, read_method: str, project: str | None, temp_location: str | None):
    """Beam's BigQuery read of `query` (rows as dicts; TIMESTAMP as datetime)."""
    from apache_beam.io.gcp.bigquery import ReadFromBigQuery

    kwargs = {"gcs_location": temp_location} if read_method == "EXPORT" and temp_location else {}
    return ReadFromBigQuery(
        query=query,
        use_standard_sql=True,
        method=getattr(ReadFromBigQuery.Method, read_method),
        project=project,
        **kwargs,
    )
