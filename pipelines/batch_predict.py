"""Beam batch prediction: raw ride CSVs -> parse / validate / encode -> RunInference (Keras) -> key,fare_pred.

    python -m pipelines.predict --input 'rides-*.csv' --output /tmp/predictions
    python -m pipelines.predict --input 'gs://b/rides-*.csv' --output gs://b/predictions \
        --runner DataflowRunner --project P --region europe-west1 --temp_location gs://b/tmp \
        --setup_file pyproject.toml --requirements_file requirements-predict.txt --requirements_cache skip
    python scripts/submit_dataflow.py --job predict --input 'gs://b/rides-*.csv'   # the same, from settings

On Dataflow the workers need TensorFlow, which the package's own dependencies leave
out: requirements-predict.txt ships it (or a worker image with it, --sdk_container_image).

Reads CSV files with a header (the raw table's columns; `fare_amount` and `key`
optional) in blocks of lines, through the same block source as preprocessing
(`pipelines.preprocessing.sources.ReadCsvBlocks`: byte ranges shared out to workers), prepares each block
with the same parse, rules
and features as preprocessing (`taxifare_core.serving`, fare rule aside: the
fare is what we predict), prices the blocks with `RunInference` and a Keras
model handler, and writes:

    OUTPUT/run-<id>/predictions-SSSSS-of-NNNNN.csv   key,fare_pred   (key: the ride's key, else its line number)
    OUTPUT/run-<id>/dead_letter-SSSSS-of-NNNNN.csv   key,reason,input  (rides that cannot be priced, and why)
    OUTPUT/run-<id>/stats.json                       statistics of the priced rides' 65 features ("predicted") and
                                                     their drift against the model's training statistics (skew)
    OUTPUT/summary.json                              counts, and the manifest that publishes run-<id>

(written crash-safe: see `taxifare_core.storage.outputs` and docs/reliability.md;
`taxifare_core.storage.outputs.resolve("OUTPUT/predictions-*.csv")` lists the published files).

With several input files, a ride without key is named `PATH:LINE`, PATH the file's path
relative to the input files' common folder (`2015/rides.csv:7`, `2016/rides.csv:7`).
Importing this module never imports TensorFlow: the handler loads Keras on the worker.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import progress
from pipelines.cli import UsageError
from pipelines.cloud import dataflow
from pipelines.preprocessing.options import absolute_path
from pipelines.preprocessing.parse import (
    RawBlock,
    block_body,
    line_text,
    split_lines,
    typed_block,
    typed_csv_options,
)
from pipelines.preprocessing.sources import ReadCsvBlocks, check_inputs, input_bytes
from pipelines.preprocessing.statistics import STATS_PARTS, FeatureStatisticsFn
from pipelines.runners import LOCAL_RUNNERS, pipeline_options
from taxifare_core import contract, storage
from taxifare_core.drift import drift_report
from taxifare_core.parsing import clip_record
from taxifare_core.serving import SERVING_COLUMNS, PreparedRides, prepare_rides
from taxifare_core.stats_file import STATS_FILE, parse_stats
from taxifare_core.storage import outputs
from taxifare_core.training import registry

COUNTER_NAMESPACE = "taxifare_predict"
PREDICTIONS, DEAD_LETTER, STATISTICS = "predictions", "dead_letter", "statistics"
PREDICTIONS_HEADER = "key,fare_pred"
DEAD_LETTER_HEADER = "key,reason,input"
PREDICT_BLOCK_ROWS = 10_000
KIND = "predict"  # the manifest's job name (taxifare_core.storage.outputs.check_kind)


@dataclass(frozen=True)
class EncodedBlock:
    """Rides ready for the model: their output keys (an Arrow string array) and float32 (n, 65) features."""

    keys: pa.Array
    features: np.ndarray


def _csv_line(*fields) -> str:
    """Fields as one CSV row, quoted where needed: a \r or \n in a key stays inside its quotes."""
    buffer = io.StringIO()
    # The csv module quotes a field holding a character of the line terminator: "\r\n" makes it
    # quote both, so a key with a CR or a newline is one row for every CSV reader.
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()[:-2]


# What makes csv.writer quote a field: the delimiter, the quote, a character of the "\r\n" terminator.
_NEEDS_QUOTES = '[,"\r\n]'


def csv_field_texts(values: pa.Array) -> pa.Array:
    """Non-empty strings as CSV fields, quoted (quotes doubled) exactly where `_csv_line` quotes them."""
    needs = pc.match_substring_regex(values, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


# Cents are the fare times 100, rounded half to even as Python's formatting rounds: the product is
# exact for a float32 fare (24 + 7 bits fit a float64's 53). A float64 fare within this margin of half
# a cent, or too large for exact cents, is written by Python's own formatting instead.
_HALF_CENT_MARGIN = 1e-6
_EXACT_CENTS = 2.0**52


def fare_texts(fares: np.ndarray) -> pa.Array:
    """Finite fares as f"{fare:.2f}" writes them ("12.35", "-0.00"), computed over the whole array."""
    fares = np.asarray(fares)
    values = fares.astype(np.float64)
    scaled = np.abs(values) * 100
    odd = scaled >= _EXACT_CENTS
    if fares.dtype != np.float32:
        odd |= np.abs(scaled - np.floor(scaled) - 0.5) < _HALF_CENT_MARGIN
    cents = np.where(odd, 0, np.rint(scaled)).astype(np.int64)
    units = pa.array(cents // 100).cast(pa.string())
    hundredths = pc.utf8_lpad(pa.array(cents % 100).cast(pa.string()), 2, "0")
    signs = pa.array(np.where(np.signbit(values), "-", ""), pa.string())
    texts = pc.binary_join_element_wise(signs, units, ".", hundredths, "")
    if odd.any():
        exact = [f"{fare:.2f}" for fare in values[odd].tolist()]
        texts = pc.replace_with_mask(texts, pa.array(odd), pa.array(exact, pa.string()))
    return texts


def prediction_lines(keys: pa.Array, fares: np.ndarray) -> str:
    """`key,fare_pred` lines joined by newlines, each as `_csv_line(key, f"{fare:.2f}")` writes it, vectorized."""
    if not len(keys):
        return ""
    lines = pc.binary_join_element_wise(csv_field_texts(keys), fare_texts(fares), ",")
    lines = pc.binary_join_element_wise(lines, "\n", "").cast(pa.large_string())
    # Each line ends with its newline: the array's value buffer is the whole text, read in one go.
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return data.to_pybytes()[bounds[0] : bounds[-1] - 1].decode("utf-8")


def common_folder(files: Sequence[str]) -> str:
    """The deepest folder holding all the files ("" for the filesystem root), gs:// kept intact."""
    folders = [path.split("/")[:-1] for path in files]
    common = []
    for level in zip(*folders):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


def file_label(source: str, key_root: str | None) -> str:
    """A file's name in the keys of its rides: its path under key_root, else its base name."""
    if key_root is not None and source.startswith(key_root + "/"):
        return source[len(key_root) + 1 :]
    return source.rsplit("/", 1)[-1]


def _dead_line(key: str, reason: str, text: str) -> str:
    """One dead-letter line: key, reason, input (an input over parsing.MAX_RECORD_CHARS cut, the reason says so)."""
    text, reason = clip_record(text, reason)
    return _csv_line(key, reason, text)


# A key whose first and last characters are printable ASCII other than a space: str.strip() leaves it as it is.
_KEPT_AS_IS = r"(?s)^[!-~](.*[!-~])?$"


def ride_keys(keys: pa.Array | None, line_numbers: np.ndarray, prefix: str) -> pa.Array:
    """Each ride's output key: its `key` stripped, else (no column, blank key) `prefix` + its line number.

    Vectorized: only keys that may hold whitespace at an end are stripped one by one, as str.strip() does.
    """
    labels = pa.array(line_numbers, pa.int64()).cast(pa.string())
    if prefix:
        labels = pc.binary_join_element_wise(prefix, labels, "")
    if keys is None:
        return labels
    as_is = pc.fill_null(pc.match_substring_regex(keys, _KEPT_AS_IS), False).to_numpy(zero_copy_only=False)
    if as_is.all():
        return keys
    rows = np.flatnonzero(~as_is)
    stripped = [key.strip() if key is not None else "" for key in keys.take(rows).to_pylist()]
    chosen = pa.array([key or label for key, label in zip(stripped, labels.take(rows).to_pylist())], pa.string())
    return pc.replace_with_mask(keys, pa.array(~as_is), chosen)


class _Rides(NamedTuple):
    """A block's rides with the header's field count, before the model: where each came from, as text."""

    fields: pd.DataFrame  # the SERVING_COLUMNS (typed or text) and the key column if any
    line_numbers: np.ndarray
    text: Callable[[int], str]  # position -> the ride's line as read
    bad: list  # [(line number, text, reason)] of the lines set aside


def _typed_rides(block: RawBlock) -> _Rides | None:
    """The fast path (preprocessing's): Arrow reads the block with the contract's types; None when the
    text path must judge it (a value Arrow cannot convert, a quoted newline, a line too long...)."""
    # Without quotes and lone CRs, a line is a row for Arrow as for the text split. With them, a quoted
    # newline joins two lines, a lone CR splits one, and the two cancel out in a count of rows (a blank
    # line then shifts). Quotes are rare in rides: such blocks take the text path, as they always did.
    if b'"' in block.data or (b"\r" in block.data and block.data.count(b"\r") != block.data.count(b"\r\n")):
        return None
    wanted = tuple(column for column in block.columns if column in SERVING_COLUMNS or column == contract.KEY_COLUMN)
    typed = typed_block(block, typed_csv_options(wanted))
    if typed is None:
        return None
    frame, line_numbers, bad = typed
    lines = None

    def text(position: int) -> str:
        nonlocal lines
        lines = block_body(block).split(b"\n") if lines is None else lines
        return line_text(lines, block, int(line_numbers[position]))

    return _Rides(frame, line_numbers, text, bad)


def _text_rides(block: RawBlock) -> _Rides:
    """The text path: every field as text, split by Arrow or line by line (`split_lines`)."""
    split = split_lines(block)
    return _Rides(split.fields, split.line_numbers, split.texts.__getitem__, split.bad)


_NUMERIC_REASON_PREFIXES = tuple(f"{column}: " for column in contract.NUMERIC_COLUMNS)


def _numeric_parse_reason(prepared: PreparedRides) -> bool:
    """True when a numeric column gave a parse reason: its message quotes the value as read (text or
    number), so the text path must give it for the dead letter to read the same on both paths."""
    return any(prepared.reasons[row].startswith(_NUMERIC_REASON_PREFIXES) for row in np.flatnonzero(~prepared.valid))


def encode_block(block: RawBlock, name_by_file: bool, key_root: str | None = None) -> tuple[EncodedBlock, list[str]]:
    """One block -> (the rides the model can price, dead-letter lines for the others).

    A ride without key is named by its line number, prefixed with its file (`file_label`) when
    `name_by_file`: two files of the same name in different folders keep different keys.
    Vectorized over the block: Arrow's typed read when it can (as preprocessing), the text split otherwise.
    """
    prefix = f"{file_label(block.source, key_root)}:" if name_by_file else ""
    rides = _typed_rides(block)
    prepared = None if rides is None or not len(rides.fields) else prepare_rides(rides.fields[list(SERVING_COLUMNS)])
    if prepared is not None and _numeric_parse_reason(prepared):
        rides = prepared = None
    if rides is None:
        rides = _text_rides(block)
    dead = [_dead_line(f"{prefix}{number}", reason, text) for number, text, reason in rides.bad]
    if not len(rides.fields):
        return EncodedBlock(pa.array([], pa.string()), np.empty((0, contract.N_FEATURES), dtype=np.float32)), dead
    if prepared is None:
        prepared = prepare_rides(rides.fields[list(SERVING_COLUMNS)])
    key_column = rides.fields.get(contract.KEY_COLUMN)
    keys = ride_keys(None if key_column is None else pa.array(key_column, pa.string()), rides.line_numbers, prefix)
    failed = np.flatnonzero(~prepared.valid)
    if len(failed):
        failed_keys = keys.take(failed).to_pylist()
        dead += [
            _dead_line(key, prepared.reasons[position], rides.text(position))
            for key, position in zip(failed_keys, failed.tolist())
        ]
        keys = keys.filter(pa.array(prepared.valid))
    return EncodedBlock(keys, prepared.features), dead


class EncodeBlockFn(beam.DoFn):
    """RawBlock -> EncodedBlock; rides that cannot be priced to the "dead_letter" output."""

    def __init__(self, name_by_file: bool, key_root: str | None = None):
        self.name_by_file, self.key_root = name_by_file, key_root
        self.dead = Metrics.counter(COUNTER_NAMESPACE, DEAD_LETTER)

    def process(self, block: RawBlock):
        encoded, dead = encode_block(block, self.name_by_file, self.key_root)
        if progress.current is not None:  # set by `run` for an in-process runner
            progress.current.advance(len(block.data), rows=len(encoded.keys) + len(dead))
        if dead:
            self.dead.inc(len(dead))
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, "\n".join(dead))
        if len(encoded.keys):
            yield encoded


class KerasBlockModelHandler(ModelHandler[EncodedBlock, PredictionResult, Any]):
    """RunInference handler: a `.keras` model (local or gs://) pricing whole EncodedBlocks."""

    def __init__(self, model_uri: str):
        super().__init__()
        self.model_uri = model_uri

    def load_model(self):
        """Load the Keras model once per worker (TensorFlow imported here, not at module import)."""
        # The modules loaded so far, then TensorFlow's (millions of objects), live as long as the worker: out
        # of the cyclic garbage collector's sight, its full passes (during the import, the run, and at exit)
        # stop walking them all.
        gc.freeze()
        model = registry.load_keras_model(self.model_uri)
        gc.freeze()
        return model

    def run_inference(self, batch: Sequence[EncodedBlock], model, inference_args=None) -> Iterable[PredictionResult]:
        """One forward pass over the blocks of a batch; each block gets its fares back."""
        features = np.concatenate([block.features for block in batch])
        fares = np.asarray(model.predict_on_batch(features)).reshape(-1)
        bounds = np.cumsum([0] + [len(block.keys) for block in batch])
        return [PredictionResult(block, fares[a:b]) for block, a, b in zip(batch, bounds[:-1], bounds[1:])]

    def batch_elements_kwargs(self):
        """Blocks are batches already: a few per forward pass."""
        return {"min_batch_size": 1, "max_batch_size": 4}

    def get_metrics_namespace(self) -> str:
        return COUNTER_NAMESPACE


def format_predictions(result: PredictionResult) -> str:
    """A priced block as `key,fare_pred` lines (cents)."""
    return prediction_lines(result.example.keys, result.inference)


# A broken model (NaN weights) answers NaN: such a ride is not priced, and the line says why.
NON_FINITE_FARE = "the model gave a non-finite fare: its weights are broken; use another --run"


class KeepFiniteFaresFn(beam.DoFn):
    """Priced blocks -> their rides with a finite fare (counted); the others to the dead letter, with the reason."""

    def __init__(self):
        self.priced = Metrics.counter(COUNTER_NAMESPACE, PREDICTIONS)
        self.dead = Metrics.counter(COUNTER_NAMESPACE, DEAD_LETTER)

    def process(self, result: PredictionResult):
        fares = np.asarray(result.inference)
        finite = np.isfinite(fares)
        if not finite.all():
            keys = result.example.keys
            lost = keys.filter(pa.array(~finite)).to_pylist()
            self.dead.inc(len(lost))
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, "\n".join(_dead_line(key, NON_FINITE_FARE, "") for key in lost))
            kept = np.flatnonzero(finite)
            block = EncodedBlock(keys.filter(pa.array(finite)), result.example.features[kept])
            result = PredictionResult(block, fares[kept])
        if len(result.example.keys):
            self.priced.inc(len(result.example.keys))
            yield result


class PredictRideFiles(beam.PTransform):
    """A file pattern of raw ride CSVs -> {"predictions": key,fare_pred text, "dead_letter": key,reason,input text}."""

    def __init__(
        self,
        pattern: str | list[str],
        model_uri: str,
        name_by_file: bool,
        block_rows: int = PREDICT_BLOCK_ROWS,
        key_root: str | None = None,
    ):
        super().__init__()
        self.pattern, self.model_uri = pattern, model_uri
        self.name_by_file, self.block_rows, self.key_root = name_by_file, block_rows, key_root

    def expand(self, pbegin):
        encoded = (
            pbegin
            | "ReadCsv" >> ReadCsvBlocks(self.pattern, self.block_rows, required=SERVING_COLUMNS)
            | "Prepare"
            >> beam.ParDo(EncodeBlockFn(self.name_by_file, self.key_root)).with_outputs(DEAD_LETTER, main="encoded")
        )
        priced = (
            encoded["encoded"]
            | "RunInference" >> RunInference(KerasBlockModelHandler(self.model_uri))
            | "KeepFiniteFares" >> beam.ParDo(KeepFiniteFaresFn()).with_outputs(DEAD_LETTER, main="priced")
        )
        predictions = priced["priced"] | "FormatPredictions" >> beam.Map(format_predictions)
        dead_letter = (encoded[DEAD_LETTER], priced[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
        statistics = (
            encoded["encoded"]
            | "Statistics" >> beam.CombineGlobally(FeatureStatisticsFn(contract.N_FEATURES))
            | "StatisticsJson" >> beam.Map(predicted_stats_json)
        )
        return {PREDICTIONS: predictions, DEAD_LETTER: dead_letter, STATISTICS: statistics}


def predicted_stats_json(split: dict) -> str:
    """The priced rides' statistics as one JSON line {"splits": {"predicted": ...}}."""
    return json.dumps({"splits": {"predicted": split}}, separators=(",", ":"))


def publish_prediction_statistics(output_dir: str, model_uri: str) -> dict | None:
    """OUTPUT/stats.json: the priced rides' statistics and their skew against the model's training rows.

    The reference is the stats.json the trainer copied into the model's run folder
    (its "train" split); a model trained before statistics existed gets none.
    """
    parts = storage.join(output_dir, STATS_PARTS)
    payload = json.loads(storage.read_text(parts))
    reference_path = storage.join(model_uri.rsplit("/", 1)[0], STATS_FILE)
    if storage.exists(reference_path):
        reference = parse_stats(storage.read_text(reference_path), reference_path)
        payload["drift"] = drift_report(
            payload["splits"]["predicted"], reference["splits"]["train"], f"{reference_path} (train)", "predicted rides"
        )
    else:
        payload["drift"] = None
    storage.write_text(storage.join(output_dir, STATS_FILE), json.dumps(payload, indent=1) + "\n")
    storage.remove_file(parts)
    return payload["drift"]


def build_predict(
    pipeline: beam.Pipeline,
    inputs,
    output_dir: str,
    model_uri: str,
    name_by_file: bool,
    block_rows: int = PREDICT_BLOCK_ROWS,
    key_root: str | None = None,
) -> None:
    """The batch prediction graph on `pipeline`: read, prepare, RunInference, write its outputs into output_dir.

    `inputs` is a glob or a list of files. Touches no file: `run` checks the input
    and model first and publishes the run folder; a Dataflow dry run
    (pipelines.cloud.predict_dry_run.build_predict_dry_run_job) builds it offline.
    """
    pcolls = pipeline | "PredictRides" >> PredictRideFiles(inputs, model_uri, name_by_file, block_rows, key_root)
    pcolls[PREDICTIONS] | "WritePredictions" >> beam.io.WriteToText(
        storage.join(output_dir, PREDICTIONS), file_name_suffix=".csv", header=PREDICTIONS_HEADER
    )
    pcolls[DEAD_LETTER] | "WriteDeadLetter" >> beam.io.WriteToText(
        storage.join(output_dir, DEAD_LETTER), file_name_suffix=".csv", header=DEAD_LETTER_HEADER
    )
    pcolls[STATISTICS] | "WriteStatistics" >> beam.io.WriteToText(
        storage.join(output_dir, STATS_PARTS), num_shards=1, shard_name_template=""
    )


def _counter(result, name: str) -> int:
    """A committed counter's value after the pipeline has finished."""
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE).with_name(name))
    return int(sum(c.committed or c.attempted or 0 for c in query["counters"]))


def _hide_resource_module_warning(record: logging.LogRecord) -> bool:
    """Logging filter: False for RunInference's 'Resource module is not available' warning."""
    return not record.getMessage().startswith("Resource module is not available")


def run(
    input_glob: str,
    output_dir: str,
    run_name: str | None = None,
    registry_dir: str | None = None,
    beam_args: list[str] | None = None,
    block_rows: int = PREDICT_BLOCK_ROWS,
    force: bool = False,
) -> dict:
    """Run the batch prediction and print a summary; returns counts and output globs.

    Crash-safe as preprocessing, through the same `taxifare_core.storage.outputs.publishing_run`:
    one run at a time per output folder; the run writes OUTPUT/run-<id>/ and publishes it
    by writing OUTPUT/summary.json last, so a failed or killed run leaves the previous
    predictions as they were; only runs this job provably wrote are removed, after publishing.
    UsageError when no file matches, a header lacks a column, the output is a file, someone
    else's folder (unless `force`), unwritable, or another run writes there; registry.NoModelError when no model.
    """
    started = time.perf_counter()
    # Workers (Dataflow's, the portable runner's) resolve a relative path against their own folder.
    input_glob, output_dir = absolute_path(input_glob), absolute_path(output_dir)
    registry_dir = absolute_path(registry_dir)
    output_dir = output_dir.rstrip("/") or "/"
    options = pipeline_options(beam_args or [])
    try:
        dataflow.check_dataflow_options(options)
    except dataflow.DataflowError as error:
        raise UsageError(str(error)) from None
    model_run = registry.run_path(run_name, registry_dir)
    # An empty or truncated model.keras is refused here, in one line, not as a worker's traceback.
    registry.check_run_model(model_run)
    model_uri = storage.join(model_run, registry.MODEL_FILE)
    files = check_inputs(input_glob, SERVING_COLUMNS)
    try:
        with outputs.publishing_run(
            output_dir, KIND, force, lambda line: print(f"warning: {line}", flush=True)
        ) as run_folder:
            summary = predict_and_publish(files, run_folder, model_uri, options, block_rows, started)
    except outputs.OutputUsageError as error:
        raise UsageError(str(error)) from None
    print(
        f"done in {summary['seconds']:.1f} s: {summary['predicted']:,} ride(s) priced -> {summary['predictions']}; "
        f"{summary['dead_letter']:,} could not be priced -> {summary['dead_letter_files']}"
    )
    skew = summary["skew"]
    if skew is None:
        print(f"statistics: {summary['statistics']} (no training statistics beside the model: no skew scored)")
    else:
        flagged = ", ".join(f"{n} (PSI {skew['scores'][n]:.2f})" for n in skew["flagged"]) or "nothing"
        print(f"statistics: {summary['statistics']}; training-serving skew (PSI > {skew['threshold']}): {flagged}")
    return summary


def predict_and_publish(
    files: list[str], run_folder: outputs.RunFolder, model_uri: str, options, block_rows: int, started: float
) -> dict:
    """Price the rides into the run folder, then publish it."""
    run_dir = run_folder.path
    print(f"predicting {len(files)} file(s) with {model_uri} -> {run_dir}", flush=True)
    # Beam's RunInference warns that `resource` (memory stats) is missing each time it loads the model:
    # it is (Beam's import of it fails without torch), and that is harmless noise for users.
    logging.getLogger().addFilter(_hide_resource_module_warning)
    if options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
        # A failing bundle reaches the caller as an exception (pipelines.cli makes a full disk one
        # line); Beam's own ERROR log of it would print the traceback first. Remote runs keep their logs.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    pipeline = beam.Pipeline(options=options)
    build_predict(pipeline, files, run_dir, model_uri, len(files) > 1, block_rows, key_root=common_folder(files))
    if progress.runs_here(options):  # EncodeBlockFn advances it in this process
        progress.start("predict", input_bytes(files), unit="B")
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except BaseException:
        progress.stop(failed=True)
        raise
    progress.stop()
    summary = {
        "predicted": _counter(result, PREDICTIONS),
        "dead_letter": _counter(result, DEAD_LETTER),
        "predictions": storage.join(run_dir, f"{PREDICTIONS}-*.csv"),
        "dead_letter_files": storage.join(run_dir, f"{DEAD_LETTER}-*.csv"),
        "model": model_uri,
        "inputs": files,
        "statistics": storage.join(run_dir, STATS_FILE),
        "skew": publish_prediction_statistics(run_dir, model_uri),
        "seconds": time.perf_counter() - started,
    }
    run_folder.publish(summary)
    return summary
