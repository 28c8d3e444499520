"""The CSV block source: files (plain, .gz, .bz2; local or gs://) read in blocks of whole lines.

    pipeline | ReadCsvBlocks(pattern, block_rows)   -> RawBlock (bytes of whole lines, first line number)

Each file is planned into byte ranges of about `block_rows` lines, shared out to workers;
the header is checked once per file (`read_header`), binary or foreign files stop with one line.
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.cli import UsageError
from pipelines.preprocessing.coders import BatchCoder
from pipelines.preprocessing.parse import RawBlock
from taxifare_core import contract
from taxifare_core.parsing import MalformedRecord, header_columns
from taxifare_core.storage import outputs

# The origin course's CHUNK_SIZE: also the size of the batches that `--dedupe batch` dedupes within.
DEFAULT_BLOCK_ROWS = 100_000


_READ_CHUNK_BYTES = 16 * 1024 * 1024


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


@dataclass(frozen=True)
class BlockSpan:
    """Where one block lies in a file: bytes [start, end) hold whole lines from `first_line` (1-based)."""

    path: str
    start: int
    end: int
    first_line: int
    columns: tuple[str, ...]
    newline: bytes = b"\n"


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
    first = head if end < 0 else head[: end + 1]
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


def check_inputs(pattern: str, required: tuple[str, ...] = contract.RAW_COLUMNS) -> list[str]:
    """The CSV files an --input names, each with a usable header holding `required`; UsageError (one line) otherwise.

    A glob into a published output folder (its raw cache) names that output's files
    (`taxifare_core.storage.outputs.resolve`); preprocessing and batch prediction both check their input here.
    """
    try:
        matched = outputs.resolve(pattern)
    except outputs.IncompleteOutputError as error:
        raise UsageError(str(error)) from None
    if matched is None:
        matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if not matched:
        raise UsageError(outputs.unfinished_hint(pattern) or f"no file matches --input {pattern}")
    for path in matched:
        try:
            read_header(path, required)
        except MalformedRecord as error:
            raise UsageError(error.reason) from None
    return matched


def input_bytes(files: list[str]) -> int | None:
    """The CSV input's total size, a progress line's basis; None when unknown (no files, compressed files)."""
    if not files or any(is_compressed(path) for path in files):
        return None
    return sum(FileSystems.match([path])[0].metadata_list[0].size_in_bytes for path in files)


def _cuts(chunk: bytes, newline: bytes, lines_in_block: int, block_rows: int) -> tuple[np.ndarray, int]:
    """Offsets just after every block_rows-th line end of `chunk` (counting on from `lines_in_block`
    lines already in the current block), and the count of lines in the block after the chunk."""
    ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == newline[0]) + 1
    return ends[block_rows - lines_in_block - 1 :: block_rows], (lines_in_block + len(ends)) % block_rows


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


class ReadCsvBlocks(beam.PTransform):
    """A file pattern (glob, local or gs://) -> RawBlock elements of `block_rows` lines.

    Every file's header must name the `required` columns (default: the raw table's).
    """

    def __init__(
        self,
        pattern: str | list[str],
        block_rows: int = DEFAULT_BLOCK_ROWS,
        required: tuple[str, ...] = contract.RAW_COLUMNS,
    ):
        super().__init__()
        # A list: the files of a published output (taxifare_core.storage.outputs.resolve), read as they are.
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
