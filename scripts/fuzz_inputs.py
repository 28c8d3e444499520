"""Fuzz the input side: malformed input of many kinds through preprocessing and batch prediction.

    .venv/bin/python scripts/fuzz_inputs.py                      # every kind, mixed into real rides
    .venv/bin/python scripts/fuzz_inputs.py --quick              # a handful of kinds (`make test` runs this)
    .venv/bin/python scripts/fuzz_inputs.py --separate --seed 3  # also each line kind in a file of its own
    .venv/bin/python scripts/fuzz_inputs.py --sample /path/nyc_taxi_fare_sample_8k.csv --rides 2000

Two families of kinds:

* *line kinds* (times out of range, Feb 30, stray \\r, 3 MB fields, 1e309, field deletions,
  swaps, truncations at random byte offsets, latin-1 and UTF-16 bytes, NUL and escape
  characters, unbalanced quotes, a repeated header, blank lines, ...): each makes a few
  lines from real rides (`--sample`, else rides from taxifare_core.generate), every kind
  mixed into one file of real rides at random places;
* *file kinds* (.csv.gz, .bz2, CR-only and CRLF files, a BOM, reordered columns, gzip
  without its name, a cut .gz, zip, PNG, random bytes, UTF-16, empty file, a folder, binary
  garbage after a valid header, a header alone).

Each input goes through `python -m pipelines.preprocess` and `python -m pipelines.predict
--input` (a tiny model trained once with `python -m pipelines.train` in a temporary
registry), each in its own process, and is checked: the exit code is the expected one, no
traceback on stderr, summary.json says `balanced`, every injected line expected to be bad
input is in the dead letter by its line number (by key, line number or text for batch
prediction), no good line is, and the row counts against a run on the same rides without
the injected lines add up (a line that is not bad input must be dropped by a cleaning rule
or kept). File kinds that hold the same rides as a plain file (.gz, CR-only, ...) must give
the same shards, dead letter and predictions as that file; the others must stop with one
line and exit code 2.

Prints a table per kind and a final line `fuzz: ... crashes C, lines unaccounted U, ...`;
exit code 1 when any check fails. Seeded (`--seed`): the same seed makes the same files.
`--time_limit` stops starting new runs after that many seconds (the kinds not run are
reported as skipped, and the run fails).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taxifare_core import contract  # noqa: E402
from taxifare_core.serving import RULE_MESSAGES  # noqa: E402
from taxifare_core.storage import outputs  # noqa: E402
from taxifare_core.training import registry  # noqa: E402

HEADER = ",".join(contract.RAW_COLUMNS_WITH_KEY)
DEFAULT_SAMPLE = ROOT.parent / "shared" / "data" / "nyc_taxi_fare_sample_8k.csv"
BAD, ROW, ANY, BLANK = "bad", "row", "any", "blank"  # what must become of an injected line
FARE, TIME, PLON, PLAT, DLON, DLAT, PASSENGERS = range(1, 8)  # field positions after the key
RUN_TIMEOUT = 600


# --- line kinds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineKind:
    """A kind of malformed line: `make(rng, fields)` -> the line (str, or bytes for encodings);
    what preprocessing and batch prediction must make of it (the first physical line; any
    further one, from a quoted newline, may go either way)."""

    name: str
    make: Callable[[random.Random, list[str]], str | bytes]
    preprocess: str
    predict: str


def _set(position: int, value: str):
    return lambda rng, f: ",".join(f[:position] + [value] + f[position + 1 :])


def _edit(position: int, change: Callable[[str], str]):
    return lambda rng, f: ",".join(f[:position] + [change(f[position])] + f[position + 1 :])


def _delete_field(rng, f):
    position = rng.randint(1, 7)
    return ",".join(f[:position] + f[position + 1 :])


def _duplicate_field(rng, f):
    position = rng.randint(1, 7)
    return ",".join(f[: position + 1] + f[position:])


def _swap_fields(rng, f):
    a, b = rng.sample(range(1, 8), 2)
    f = list(f)
    f[a], f[b] = f[b], f[a]
    return ",".join(f)


def _truncate(rng, f):
    line = ",".join(f)
    return line[: rng.randint(1, len(line) - 1)]


def _stray_cr(rng, f):
    position = rng.randint(1, 6)  # not the last field: a \r ending the line is a CRLF line end, not stray
    value = f[position]
    cut = rng.randint(1, max(1, len(value) - 1))
    return ",".join(f[:position] + [value[:cut] + "\r" + value[cut:]] + f[position + 1 :])


def _bytes_in(position: int, extra: bytes):
    def make(rng, f):
        parts = [part.encode() for part in f]
        parts[position] = parts[position][:2] + extra + parts[position][2:]
        return b",".join(parts)

    return make


LINE_KINDS = [
    LineKind("time_year_2300", _set(TIME, "2300-01-06 09:50:45 UTC"), BAD, BAD),
    LineKind("time_year_0001", _set(TIME, "0001-01-01 00:00:00 UTC"), BAD, BAD),
    LineKind("time_year_9999", _set(TIME, "9999-12-31 23:59:59 UTC"), BAD, BAD),
    LineKind("time_year_0000", _set(TIME, "0000-01-01 00:00:00 UTC"), BAD, BAD),
    LineKind("time_year_10000", _set(TIME, "10000-01-01 00:00:00 UTC"), BAD, BAD),
    LineKind("time_feb_30", _set(TIME, "2013-02-30 10:00:00 UTC"), BAD, BAD),
    LineKind("time_apr_31", _set(TIME, "2012-04-31 10:00:00 UTC"), BAD, BAD),
    LineKind("time_feb_29_2014", _set(TIME, "2014-02-29 10:00:00 UTC"), BAD, BAD),
    LineKind("time_hour_24", _set(TIME, "2013-01-01 24:00:00 UTC"), BAD, BAD),
    LineKind("time_second_60", _set(TIME, "2013-01-01 23:59:60 UTC"), BAD, BAD),
    LineKind("time_words", _set(TIME, "yesterday"), BAD, BAD),
    LineKind("time_control_chars", _edit(TIME, lambda v: v + "\x01\x02"), BAD, BAD),
    LineKind("time_without_utc", _edit(TIME, lambda v: v.replace(" UTC", "")), ROW, ROW),
    LineKind("time_other_zone", _edit(TIME, lambda v: v.replace(" UTC", "+05:00")), ROW, ROW),
    LineKind("time_iso_t_z", _edit(TIME, lambda v: v.replace(" ", "T", 1).replace(" UTC", "Z")), ROW, ROW),
    LineKind("time_empty", _set(TIME, ""), ROW, ROW),
    LineKind("fare_1e309", _set(FARE, "1e309"), BAD, ROW),  # prediction ignores the fare column
    LineKind("lon_inf", _set(PLON, "inf"), BAD, BAD),
    LineKind("lat_minus_infinity", _set(PLAT, "-Infinity"), BAD, BAD),
    LineKind("fare_nan_text", _set(FARE, "NaN"), ROW, ROW),
    LineKind("lat_nan_text", _set(DLAT, "nan"), ROW, ROW),
    LineKind("fare_1e-400", _set(FARE, "1e-400"), ROW, ROW),
    LineKind("fare_minus_zero", _set(FARE, "-0"), ROW, ROW),
    LineKind("fare_huge_int", _set(FARE, "1" + "0" * 40), ROW, ROW),
    LineKind("fare_plus_sign", _edit(FARE, lambda v: "+" + v), ROW, ROW),
    LineKind("fare_thousands_quoted", _set(FARE, '"1,000"'), BAD, ROW),
    LineKind("fare_underscore", _set(FARE, "1_000"), BAD, ROW),
    LineKind("passenger_hex", _set(PASSENGERS, "0x2"), BAD, BAD),
    LineKind("passenger_fraction", _set(PASSENGERS, "2.5"), BAD, BAD),
    LineKind("passenger_huge", _set(PASSENGERS, "1" + "0" * 20), ROW, ROW),
    LineKind("passenger_negative", _set(PASSENGERS, "-1"), ROW, ROW),
    LineKind("coords_scientific", _edit(PLAT, lambda v: f"{float(v) / 10:.6f}e1"), ROW, ROW),
    LineKind("coords_all_zero", lambda rng, f: ",".join(f[:3] + ["0", "0", "0", "0"] + f[7:]), ROW, ROW),
    LineKind("field_deleted", _delete_field, BAD, BAD),
    LineKind("field_duplicated", _duplicate_field, BAD, BAD),
    LineKind("fields_swapped", _swap_fields, ANY, ANY),
    LineKind("truncated_at_random", _truncate, ANY, ANY),
    LineKind("extra_column", lambda rng, f: ",".join(f) + ",x", BAD, BAD),
    LineKind("key_only", lambda rng, f: f[0], BAD, BAD),
    LineKind("semicolons", lambda rng, f: ";".join(f), BAD, BAD),
    LineKind("only_commas", lambda rng, f: "," * 7, ROW, ROW),
    LineKind("empty_line", lambda rng, f: "", BLANK, BLANK),
    LineKind("whitespace_line", lambda rng, f: " \t  ", BLANK, BLANK),
    LineKind("header_repeated", lambda rng, f: HEADER, BAD, BAD),
    LineKind("unbalanced_quote", _edit(FARE, lambda v: '"' + v), BAD, BAD),
    LineKind("quoted_newline", lambda rng, f: ",".join([f'"{f[0]}\nx"'] + f[1:]), BAD, BAD),
    LineKind("quoted_numbers", lambda rng, f: ",".join([f[0]] + [f'"{v}"' for v in f[1:]]), ROW, ROW),
    LineKind("nul_in_fare", _edit(FARE, lambda v: v[:1] + "\x00" + v[1:]), BAD, ROW),
    LineKind("nul_in_lat", _edit(PLAT, lambda v: v[:3] + "\x00" + v[3:]), BAD, BAD),
    LineKind("stray_cr", _stray_cr, BAD, BAD),
    LineKind("crlf_line", lambda rng, f: ",".join(f) + "\r", ROW, ROW),
    LineKind("escape_in_key", _edit(0, lambda v: v + "\x1b[31m"), ROW, ROW),
    LineKind("tab_inside_number", _edit(PLON, lambda v: v[:4] + "\t" + v[4:]), BAD, BAD),
    LineKind("tab_around_number", _edit(PLON, lambda v: "\t" + v + " "), ROW, ROW),
    LineKind("latin1_in_key", _bytes_in(0, "é".encode("latin-1")), ROW, ROW),
    LineKind("latin1_in_time", _bytes_in(TIME, "é".encode("latin-1")), BAD, BAD),
    LineKind("invalid_utf8_in_lat", _bytes_in(DLAT, b"\xff\xfe"), BAD, BAD),
    LineKind("bom_mid_file", lambda rng, f: "\ufeff" + ",".join(f), ROW, ROW),
    LineKind("utf16_line", lambda rng, f: ",".join(f).encode("utf-16"), BAD, BAD),
    LineKind("huge_field_3mb", _edit(0, lambda v: v + "x" * 3_000_000), BAD, BAD),
    LineKind("key_50kb", _edit(0, lambda v: v + "k" * 50_000), ROW, ROW),
    LineKind("duplicate_row", lambda rng, f: ",".join(f), ROW, ROW),
]
QUICK_LINE_KINDS = (
    "time_year_2300",
    "time_feb_30",
    "stray_cr",
    "huge_field_3mb",
    "fare_1e309",
    "field_deleted",
    "whitespace_line",
    "duplicate_row",
    "latin1_in_time",
    "unbalanced_quote",
)


# --- inputs -------------------------------------------------------------------------------------------


def base_lines(sample: Path | None, rides: int, seed: int) -> list[str]:
    """`rides` real rides as CSV lines in HEADER's layout (the sample's first rows, else generated)."""
    import pandas as pd

    if sample and sample.exists():
        frame = pd.read_csv(sample, dtype=str, keep_default_na=False, nrows=rides)
    else:
        from taxifare_core.generate import generate_rides

        frame = generate_rides(rides, seed=seed)
    frame = frame[list(contract.RAW_COLUMNS_WITH_KEY)]
    return frame.to_csv(header=False, index=False, lineterminator="\n").splitlines()


@dataclass
class Injected:
    """One injected line: its kind, first line number in the file, physical lines, the key it was given."""

    kind: LineKind
    line: int
    texts: list[str]
    key: str


@dataclass
class MixedFile:
    """A file of real rides with injected lines: where each real ride and each injected line went."""

    path: Path
    base_line_numbers: list[int]  # file line number of base ride i
    injected: list[Injected] = field(default_factory=list)


def build_mixed(path: Path, base: list[str], kinds: list[LineKind], copies: int, rng: random.Random) -> MixedFile:
    """Write `base` with `copies` lines of each kind at random places; record every line's number."""
    items: list[tuple[bytes, LineKind | None, str]] = [(line.encode(), None, "") for line in base]
    counter = 0
    for kind in kinds:
        for _ in range(copies):
            source = rng.choice(base).split(",")
            counter += 1
            key = f"fuzz{counter}"
            if kind.name != "duplicate_row":
                source[0] = key
            made = kind.make(rng, source)
            data = made if isinstance(made, bytes) else made.encode("utf-8")
            items.insert(rng.randint(0, len(items)), (data, kind, key if kind.name != "duplicate_row" else source[0]))
    mixed = MixedFile(path, [])
    chunks, number = [HEADER.encode()], 2
    for data, kind, key in items:
        physical = data.split(b"\n")
        if kind is None:
            mixed.base_line_numbers.append(number)
        else:
            texts = [part.decode("utf-8", errors="replace").rstrip("\r") for part in physical]
            mixed.injected.append(Injected(kind, number, texts, key))
        chunks.append(data)
        number += len(physical)
    path.write_bytes(b"\n".join(chunks) + b"\n")
    return mixed


# --- runs ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One command's outcome."""

    code: int
    stderr: str
    seconds: float

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr


class Runner:
    """Runs the CLIs in subprocesses with local paths in a temporary folder.

    Stops starting new ones after a deadline.
    """

    def __init__(self, workdir: Path, time_limit: float):
        self.workdir = workdir
        self.deadline = time.monotonic() + time_limit
        self.runs = 0
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "LOCAL_DATA_PATH": str(workdir / "data"),
            "LOCAL_REGISTRY_PATH": str(workdir / "registry"),
        }

    @property
    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def run(self, module: str, *args: str) -> Run:
        started = time.perf_counter()
        self.runs += 1
        try:
            done = subprocess.run(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=RUN_TIMEOUT,
            )
            return Run(done.returncode, done.stderr, time.perf_counter() - started)
        except subprocess.TimeoutExpired as error:
            return Run(-9, f"timed out after {RUN_TIMEOUT} s\n{error.stderr or ''}", time.perf_counter() - started)

    def preprocess(self, source: Path, output: Path) -> Run:
        return self.run("pipelines.preprocess", "--input", str(source), "--output", str(output))

    def predict(self, source: Path, output: Path) -> Run:
        return self.run(
            "pipelines.predict",
            "--input",
            str(source),
            "--output",
            str(output),
            "--registry",
            str(self.workdir / "registry"),
            "--run",
            registry.latest_run(str(self.workdir / "registry")) or "none",
        )


@dataclass
class Outputs:
    """What a preprocessing and a batch prediction run wrote, in comparable form."""

    summary: dict
    dead: dict[int, dict]  # preprocessing dead letter by line number
    train: list[str]
    val: list[str]
    predictions: list[str]
    predict_dead: list[tuple[str, str, str]]  # (key, reason, input)


def read_outputs(pre_dir: Path, predict_dir: Path) -> Outputs:
    """Read both runs' files (missing ones read as empty)."""
    summary_path = pre_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    dead = {}
    for path in outputs.resolve(str(pre_dir / "errors-*.jsonl")) or []:
        for line in open(path, encoding="utf-8"):
            record = json.loads(line)
            dead[record["line"]] = record

    def lines(pattern):
        return sorted(line for p in (outputs.resolve(str(pattern)) or []) for line in open(p, encoding="utf-8"))

    predict_dead = []
    for path in outputs.resolve(str(predict_dir / "dead_letter-*.csv")) or []:
        with open(path, newline="", encoding="utf-8") as handle:
            predict_dead += [tuple(row) for row in list(csv.reader(handle))[1:]]
    predictions = [
        line
        for p in (outputs.resolve(str(predict_dir / "predictions-*.csv")) or [])
        for line in open(p, encoding="utf-8").readlines()[1:]
    ]
    return Outputs(
        summary,
        dead,
        lines(pre_dir / "train-*.csv"),
        lines(pre_dir / "val-*.csv"),
        sorted(predictions),
        sorted(predict_dead),
    )


def train_tiny_model(runner: Runner, processed: Path) -> Run:
    """One small model in the temporary registry, trained on the baseline's shards."""
    val = processed / "val-*.csv"
    has_val = any(Path(p).stat().st_size for p in (outputs.resolve(str(val)) or []))
    return runner.run(
        "pipelines.train",
        "--train",
        str(processed / "train-*.csv"),
        "--val",
        str(val if has_val else processed / "train-*.csv"),
        "--max_epochs_per_chunk",
        "1",
        "--registry",
        str(runner.workdir / "registry"),
        "--seed",
        "1",
    )


# --- checks ---------------------------------------------------------------------------------------------


@dataclass
class KindResult:
    """One kind's checks: where its lines went and what failed."""

    name: str
    lines: int = 0
    preprocess: Counter = field(default_factory=Counter)
    predict: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    skipped: bool = False


def run_checks(run: Run, expected_codes: tuple[int, ...], what: str) -> list[str]:
    """Exit code and traceback checks of one run."""
    problems = []
    if run.code not in expected_codes:
        problems.append(
            f"{what}: exit {run.code}, expected {'/'.join(map(str, expected_codes))}: "
            f"{run.stderr.strip().splitlines()[-1:] or ''}"
        )
    if run.traceback:
        problems.append(f"{what}: traceback on stderr")
    if run.code == 2 and len(run.stderr.strip().splitlines()) != 1:
        problems.append(f"{what}: exit 2 with {len(run.stderr.strip().splitlines())} stderr lines, not one")
    return problems


def check_mixed(mixed: MixedFile, base: Outputs, got: Outputs, results: dict[str, KindResult]) -> tuple[list[str], int]:
    """Every injected line where it must be, no good line in a dead letter, counts that add up.
    Returns (problems not tied to one kind, lines unaccounted)."""
    problems, unaccounted = [], 0
    if not got.summary.get("balanced"):
        problems.append("preprocess: summary.json not balanced (or missing)")
    base_dead_lines = {mixed.base_line_numbers[n - 2] for n in base.dead}
    injected_lines = {number for item in mixed.injected for number in range(item.line, item.line + len(item.texts))}
    stray = sorted(set(got.dead) - base_dead_lines - injected_lines)
    if stray:
        problems.append(f"preprocess: good line(s) in the dead letter: {stray[:5]}")
        unaccounted += len(stray)
    by_key = {key: reason for key, reason, _ in got.predict_dead}
    by_text = Counter(text for _, _, text in got.predict_dead)
    rule_reasons = set(RULE_MESSAGES.values())
    expected_rows = len(mixed.base_line_numbers)
    for item in mixed.injected:
        result = results[item.kind.name]
        result.lines += len(item.texts)
        for offset, text in enumerate(item.texts):
            number = item.line + offset
            blank = not text.strip()
            expected_rows += not blank
            pre_fate = item.kind.preprocess if offset == 0 else (BLANK if blank else ANY)
            serve_fate = item.kind.predict if offset == 0 else (BLANK if blank else ANY)
            in_dead = number in got.dead
            result.preprocess["dead letter" if in_dead else ("blank" if blank else "row")] += 1
            if (pre_fate == BAD and not in_dead) or (pre_fate in (ROW, BLANK) and in_dead):
                result.problems.append(
                    f"preprocess: line {number} expected {pre_fate}, "
                    f"{'in' if in_dead else 'not in'} the dead letter: {text[:60]!r}"
                )
                unaccounted += 1
            reason = by_key.get(str(number)) or (by_key.get(item.key) if offset == 0 else None)
            if reason is None and by_text[text] > 0:
                reason = "(matched by text)"
            served_bad = reason is not None and reason not in rule_reasons
            result.predict["dead letter" if reason else ("blank" if blank else "priced")] += 1
            if (serve_fate == BAD and not served_bad) or (serve_fate in (ROW, BLANK) and served_bad):
                result.problems.append(f"predict: line {number} expected {serve_fate}, got {reason!r}: {text[:60]!r}")
                unaccounted += 1
    pre_rows = got.summary.get("rows_read", -1)
    if pre_rows - base.summary.get("rows_read", 0) != expected_rows - len(mixed.base_line_numbers):
        problems.append(
            f"preprocess: rows read {pre_rows} vs {base.summary.get('rows_read')} + injected "
            f"{expected_rows - len(mixed.base_line_numbers)}"
        )
        unaccounted += abs(pre_rows - base.summary.get("rows_read", 0) - expected_rows + len(mixed.base_line_numbers))
    served = len(got.predictions) + len(got.predict_dead)
    if served != expected_rows:
        problems.append(f"predict: {served} rides priced or dead-lettered, {expected_rows} rows in the file")
        unaccounted += abs(served - expected_rows)
    return problems, unaccounted


# --- file kinds --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileKind:
    """A whole-file kind: `build(folder, reference_bytes)` -> the input path; `same` when it must
    give the reference file's results, else the exit code and message both CLIs must give."""

    name: str
    build: Callable[[Path, bytes], Path]
    same: bool = False
    codes: tuple[int, ...] = (0,)
    message: str = ""


def _file(name: str, content: Callable[[bytes], bytes]):
    def build(folder: Path, reference: bytes) -> Path:
        path = folder / name
        path.write_bytes(content(reference))
        return path

    return build


def _zip(folder: Path, reference: bytes) -> Path:
    path = folder / "rides.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rides.csv", reference)
    return path


def _reordered(reference: bytes) -> bytes:
    lines = reference.decode().splitlines()
    order = [7, 6, 5, 4, 3, 2, 1, 0]
    rows = [[row[i] for i in order] if len(row) == len(order) else row for row in csv.reader(lines)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def _binary_tail(reference: bytes) -> bytes:
    rng = random.Random(7)
    junk = [
        b"\xff" + bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(rng.randint(20, 80)))
        for _ in range(20)
    ]
    return reference + b"\n".join(junk) + b"\n"


FILE_KINDS = [
    FileKind("gzip_csv_gz", _file("rides.csv.gz", gzip.compress), same=True),
    FileKind("bzip2_csv_bz2", _file("rides.csv.bz2", bz2.compress), same=True),
    FileKind("cr_only_file", _file("rides_cr.csv", lambda r: r.replace(b"\n", b"\r")), same=True),
    FileKind("crlf_file", _file("rides_crlf.csv", lambda r: r.replace(b"\n", b"\r\n")), same=True),
    FileKind("bom_at_start", _file("rides_bom.csv", lambda r: b"\xef\xbb\xbf" + r), same=True),
    FileKind("columns_reordered", _file("rides_reordered.csv", _reordered), same=True),
    FileKind("binary_after_header", _file("rides_binary_tail.csv", _binary_tail)),
    FileKind("header_only", _file("header_only.csv", lambda r: r.split(b"\n")[0] + b"\n"), codes=(0, 1, 2)),
    FileKind("gzip_named_csv", _file("packed.csv", gzip.compress), codes=(2,), message="gzip-compressed"),
    FileKind(
        "gzip_cut_short",
        _file("cut.csv.gz", lambda r: gzip.compress(r)[: len(gzip.compress(r)) // 2]),
        codes=(2,),
        message="cannot be decompressed",
    ),
    FileKind("zip_archive", _zip, codes=(2,), message="zip archive"),
    FileKind(
        "png_image",
        _file("image.png", lambda r: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)),
        codes=(2,),
        message="looks binary",
    ),
    FileKind(
        "random_bytes",
        _file("random.csv", lambda r: random.Random(3).randbytes(4096)),
        codes=(2,),
        message="looks binary",
    ),
    FileKind("utf16_file", _file("utf16.csv", lambda r: r.decode().encode("utf-16")), codes=(2,), message="UTF-16"),
    FileKind("empty_file", _file("empty.csv", lambda r: b""), codes=(2,), message="empty file"),
    FileKind("folder", lambda folder, r: folder, codes=(2,), message="is a folder"),
]
QUICK_FILE_KINDS = ("gzip_csv_gz", "random_bytes", "folder")


def check_same(reference: Outputs, got: Outputs, reordered: bool) -> list[str]:
    """A file kind that holds the reference's rides must give its results."""
    problems = []
    if (got.train, got.val) != (reference.train, reference.val):
        problems.append("preprocess: shards differ from the plain file's")
    if {n: d["reason"] for n, d in got.dead.items()} != {n: d["reason"] for n, d in reference.dead.items()}:
        problems.append("preprocess: dead letter (line, reason) differs from the plain file's")
    if got.predictions != reference.predictions:
        problems.append("predict: predictions differ from the plain file's")
    if [(k, r) for k, r, _ in got.predict_dead] != [(k, r) for k, r, _ in reference.predict_dead] or (
        not reordered and got.predict_dead != reference.predict_dead
    ):
        problems.append("predict: dead letter differs from the plain file's")
    return problems


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (same seed, same files)")
    parser.add_argument("--rides", type=int, default=2000, help="real rides the malformed lines are mixed into")
    parser.add_argument("--copies", type=int, default=2, help="lines of each line kind in the mixed file")
    parser.add_argument(
        "--sample",
        type=Path,
        default=Path(os.environ.get("TAXIFARE_REAL_SAMPLE", DEFAULT_SAMPLE)),
        help="real rides CSV (key + raw columns); generated rides when it does not exist",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {len(QUICK_LINE_KINDS)} line kinds and {len(QUICK_FILE_KINDS)} file kinds",
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="also run each line kind in a file of its own (per-kind counts; two runs per kind)",
    )
    parser.add_argument(
        "--time_limit",
        type=float,
        default=1800,
        help="seconds after which no new run starts (the rest is reported as skipped)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the inputs and outputs here (default: a temp folder, removed)"
    )
    return parser.parse_args(argv)


def print_table(results: list[KindResult]) -> None:
    print(f"| {'kind':<24} | lines | preprocess {'':<24} | batch prediction {'':<18} | result |")
    print(f"|{'-' * 26}|-------|{'-' * 37}|{'-' * 37}|--------|")
    for r in results:
        shown = lambda counts: ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "-"  # noqa: E731
        verdict = "skipped" if r.skipped else ("ok" if not r.problems else "FAIL")
        print(f"| {r.name:<24} | {r.lines:>5} | {shown(r.preprocess):<35} | {shown(r.predict):<35} | {verdict:<6} |")
    for r in results:
        for problem in r.problems[:5]:
            print(f"  {r.name}: {problem}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    line_kinds = [k for k in LINE_KINDS if not args.quick or k.name in QUICK_LINE_KINDS]
    file_kinds = [k for k in FILE_KINDS if not args.quick or k.name in QUICK_FILE_KINDS]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fuzz_inputs_"))
    workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(workdir, args.time_limit)
    rng = random.Random(args.seed)
    base = base_lines(args.sample, args.rides, args.seed)
    source = "real sample" if args.sample.exists() else "generated rides"
    print(
        f"fuzz_inputs: seed {args.seed}, {len(base)} {source}, {len(line_kinds)} line kinds x {args.copies}, "
        f"{len(file_kinds)} file kinds, in {workdir}",
        flush=True,
    )
    crashes, unaccounted, general = 0, 0, []
    results = {k.name: KindResult(k.name) for k in line_kinds}

    def outcome(*runs_and_names) -> list[str]:
        nonlocal crashes
        problems = []
        for run, codes, what in runs_and_names:
            problems += run_checks(run, codes, what)
            # A crash: a traceback, a signal or timeout, or an exit code no CLI of ours gives on purpose.
            crashes += run.traceback or run.code not in (0, 1, 2)
        return problems

    # The baseline: the real rides alone, and the model batch prediction needs.
    plain = workdir / "base.csv"
    plain.write_text("\n".join([HEADER, *base]) + "\n")
    base_pre, base_pred = runner.preprocess(plain, workdir / "out_base"), None
    general += outcome((base_pre, (0,), "baseline preprocess"))
    train = train_tiny_model(runner, workdir / "out_base")
    general += outcome((train, (0,), "train"))
    base_pred = runner.predict(plain, workdir / "pred_base")
    general += outcome((base_pred, (0,), "baseline predict"))
    baseline = read_outputs(workdir / "out_base", workdir / "pred_base")

    # Every line kind mixed into one file.
    mixed = build_mixed(workdir / "mixed.csv", base, line_kinds, args.copies, rng)
    pre, pred = runner.preprocess(mixed.path, workdir / "out_mixed"), runner.predict(mixed.path, workdir / "pred_mixed")
    general += outcome((pre, (0,), "mixed preprocess"), (pred, (0,), "mixed predict"))
    problems, lost = check_mixed(mixed, baseline, read_outputs(workdir / "out_mixed", workdir / "pred_mixed"), results)
    general += problems
    unaccounted += lost

    # Optionally each line kind alone, so counts are per kind.
    if args.separate:
        for kind in line_kinds:
            if runner.out_of_time:
                results[kind.name].skipped = True
                continue
            alone = build_mixed(workdir / f"kind_{kind.name}.csv", base, [kind], args.copies, rng)
            out, pout = workdir / f"out_{kind.name}", workdir / f"pred_{kind.name}"
            pre, pred = runner.preprocess(alone.path, out), runner.predict(alone.path, pout)
            results[kind.name].problems += outcome((pre, (0,), "preprocess"), (pred, (0,), "predict"))
            scratch = {kind.name: KindResult(kind.name)}
            problems, lost = check_mixed(alone, baseline, read_outputs(out, pout), scratch)
            results[kind.name].problems += problems + scratch[kind.name].problems
            unaccounted += lost

    # File kinds, against a reference file: the real rides with a few kinds of bad lines that survive
    # any line-end conversion (no \r, no \n, no NUL inside a line).
    reference_kinds = [
        k
        for k in LINE_KINDS
        if k.name in ("time_year_2300", "time_feb_30", "fare_1e309", "field_deleted", "extra_column", "time_words")
    ]
    reference = build_mixed(workdir / "reference.csv", base[:300], reference_kinds, 1, random.Random(args.seed))
    ref_pre = runner.preprocess(reference.path, workdir / "out_reference")
    ref_pred = runner.predict(reference.path, workdir / "pred_reference")
    general += outcome((ref_pre, (0,), "reference preprocess"), (ref_pred, (0,), "reference predict"))
    reference_out = read_outputs(workdir / "out_reference", workdir / "pred_reference")
    file_results = []
    for kind in file_kinds:
        result = KindResult(kind.name, lines=1)
        file_results.append(result)
        if runner.out_of_time:
            result.skipped = True
            continue
        folder = workdir / f"file_{kind.name}"
        folder.mkdir(exist_ok=True)
        path = kind.build(folder, reference.path.read_bytes())
        out, pout = workdir / f"out_file_{kind.name}", workdir / f"pred_file_{kind.name}"
        pre, pred = runner.preprocess(path, out), runner.predict(path, pout)
        result.preprocess[f"exit {pre.code}"] += 1
        result.predict[f"exit {pred.code}"] += 1
        result.problems += outcome((pre, kind.codes, "preprocess"), (pred, kind.codes, "predict"))
        for run, what in ((pre, "preprocess"), (pred, "predict")):
            if run.code == 2 and kind.message and kind.message not in run.stderr:
                result.problems.append(f"{what}: message lacks {kind.message!r}: {run.stderr.strip()[:120]}")
        got = read_outputs(out, pout)
        if kind.same:
            result.problems += check_same(reference_out, got, reordered=kind.name == "columns_reordered")
        if pre.code == 0 and not got.summary.get("balanced"):
            result.problems.append("preprocess: summary.json not balanced")
        if kind.name == "binary_after_header":
            garbage = len(_binary_tail(b"").strip(b"\n").split(b"\n"))
            if len(got.dead) != len(reference_out.dead) + garbage:
                result.problems.append(
                    f"preprocess: {len(got.dead)} dead-letter lines, expected "
                    f"{len(reference_out.dead)} + {garbage} garbage lines"
                )
                unaccounted += abs(len(got.dead) - len(reference_out.dead) - garbage)

    all_results = [results[k.name] for k in line_kinds] + file_results
    print_table(all_results)
    for problem in general:
        print(f"  general: {problem}")
    failed = [r.name for r in all_results if r.problems or r.skipped]
    inputs = sum(r.lines for r in all_results if not r.skipped)
    skipped = sum(r.skipped for r in all_results)
    ok = not failed and not general and not unaccounted
    print(
        f"fuzz: {len(all_results)} kinds ({len(line_kinds)} line kinds, {len(file_kinds)} file kinds), "
        f"{inputs} inputs tried in {runner.runs} runs, crashes {crashes}, lines unaccounted {unaccounted}, "
        f"kinds failed {len(failed) - skipped}, skipped {skipped}, {time.perf_counter() - started:.0f} s -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
