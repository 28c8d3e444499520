"""End to end: `python -m pipelines.preprocess` on generated dirty CSVs, shards read back and checked row for row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pytest

from pipelines import preprocess
from taxifare_core import contract, default_sample, generate
from taxifare_core.cleaning import clean
from taxifare_core.features import processed_rows
from taxifare_core.parsing import parse_frame
from taxifare_core.storage import outputs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIN_DATE, MAX_DATE, VAL_START = "2009-01-01", "2015-01-01", "2014-12-01"
# Lines that cannot be parsed: each must reach the dead letter verbatim, with its line number.
BAD_LINES = [
    "k-bad-1,4.5,2013-07-06 17:18:00 UTC,-73.95,40.78",  # too few fields
    "k-bad-2,cheap,2013-07-06 17:18:00 UTC,-73.95,40.78,-73.98,40.77,1,x",  # text in a number
    "k-bad-3,4.5,the sixth of July,-73.95,40.78,-73.98,40.77,1,x",  # unreadable timestamp
    "k-bad-4,4.5,2013-07-06 17:18:00 UTC,-73.95,40.78,-73.98,40.77,2.5,x",  # fractional passengers
]
EDGE_ROWS = [  # inside / outside the date window exactly as BigQuery's BETWEEN of midnights
    "k-edge-1,6.5,2015-01-01 00:00:00 UTC,-73.95,40.78,-73.98,40.77,1,x",  # kept (val)
    "k-edge-2,6.5,2015-01-01 00:00:01 UTC,-73.95,40.78,-73.98,40.77,1,x",  # outside
    "k-edge-3,6.5,2009-01-01 00:00:00 UTC,-73.95,40.78,-73.98,40.77,1,x",  # kept (train)
]


def write_dirty_input(folder: Path, n_rows: int = 3000) -> tuple[list[Path], dict[int, str]]:
    """Two CSV files of generated rides (with key and an extra column).

    Plus bad lines, edges, a blank line and duplicates.
    """
    rides = generate.generate_rides(n_rows, seed=11)
    text = rides.astype(object).where(rides.notna(), "")
    text[contract.TIME_COLUMN] = rides[contract.TIME_COLUMN].dt.strftime(contract.CSV_TIME_FORMAT).fillna("")
    text["extra"] = "x"
    lines = text.to_csv(header=False, index=False, lineterminator="\n").splitlines()
    # Exact duplicates of ride 5 (other key): one in the same file, one in the other file.
    dup = "dup-key," + lines[5].split(",", 1)[1]
    half = n_rows // 2
    first = lines[:half] + BAD_LINES[:2] + [dup] + EDGE_ROWS
    second = lines[half:] + ["", BAD_LINES[2], dup, BAD_LINES[3]]
    header = ",".join([*contract.RAW_COLUMNS_WITH_KEY, "extra"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, body in enumerate((first, second)):
        path = folder / f"rides-{index}.csv"
        path.write_text(header + "\n" + "\n".join(body) + "\n")
        paths.append(path)
    return paths, {i: line for i, line in enumerate(BAD_LINES)}


def expected_rows(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """What taxifare_core computes from the same files: (train rows, val rows), exact global dedupe."""
    raw = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False, on_bad_lines="skip") for p in paths])
    raw = raw[~raw["key"].str.startswith("k-bad")]
    typed, reasons = parse_frame(raw.reset_index(drop=True))
    assert reasons.isna().all()
    stamps = typed[contract.TIME_COLUMN]
    window = stamps.isna() | stamps.between(pd.Timestamp(MIN_DATE, tz="UTC"), pd.Timestamp(MAX_DATE, tz="UTC"))
    kept = clean(typed[window]).kept
    rows = processed_rows(kept)
    is_val = (kept[contract.TIME_COLUMN] >= pd.Timestamp(VAL_START, tz="UTC")).to_numpy()
    return rows[~is_val], rows[is_val]


def published(pattern: str) -> list[str]:
    """The published files a documented glob (OUTPUT/train-*.csv) names, via OUTPUT/summary.json's manifest."""
    paths = outputs.resolve(pattern)
    assert paths is not None, f"no published summary.json beside {pattern}"
    return paths


def read_shards(pattern: str) -> np.ndarray:
    """All rows of the shards matching a glob, float32, sorted."""
    parts = []
    for path in published(pattern):
        if Path(path).stat().st_size:
            table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
            parts.append(np.column_stack([c.to_numpy() for c in table.columns]))
    rows = np.concatenate(parts).astype(np.float32) if parts else np.empty((0, contract.N_PROCESSED_COLUMNS))
    return sort_rows(rows)


def sort_rows(rows: np.ndarray) -> np.ndarray:
    """Rows in a canonical order (all columns, fare first)."""
    rows = rows.astype(np.float32)
    return rows[np.lexsort([rows[:, j] for j in reversed([contract.N_FEATURES, *range(contract.N_FEATURES)])])]


def assert_same_rows(actual: np.ndarray, expected: np.ndarray):
    """Equal row sets within the contract's tolerance."""
    expected = sort_rows(expected)
    assert actual.shape == expected.shape
    assert actual.shape[1] == contract.N_PROCESSED_COLUMNS
    if len(actual):
        assert np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max() <= contract.PROCESSED_TOLERANCE


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """The dirty input files and their expected processed rows."""
    folder = tmp_path_factory.mktemp("dirty")
    paths, _ = write_dirty_input(folder)
    return folder, paths, expected_rows(paths)


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m pipelines.preprocess ARGS` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "pipelines.preprocess", *args], capture_output=True, text=True)


def test_global_dedupe_matches_taxifare_core_row_for_row(dirty, tmp_path, capsys):
    folder, paths, (train, val) = dirty
    output = tmp_path / "out"
    code = preprocess.main(
        ["--input", str(folder / "rides-*.csv"), "--output", str(output), "--dedupe", "global", "--block_rows", "700"]
    )
    assert code == 0
    assert_same_rows(read_shards(str(output / "train-*-of-*.csv")), train)
    assert_same_rows(read_shards(str(output / "val-*-of-*.csv")), val)

    summary = json.loads((output / "summary.json").read_text())
    assert summary["balanced"] and summary["dedupe"] == "global"
    assert summary["rows_read"] == 3000 + len(BAD_LINES) + len(EDGE_ROWS) + 2
    assert summary["bad_input"] == len(BAD_LINES)
    assert summary["train_rows"] == len(train) and summary["val_rows"] == len(val)
    assert summary["dropped"]["outside_date_range"] >= 1
    assert summary["duplicates"] >= 2  # the two injected copies, plus the generator's own
    assert summary["rows_read"] == (
        summary["bad_input"]
        + summary["dropped_total"]
        + summary["duplicates"]
        + summary["train_rows"]
        + summary["val_rows"]
    )
    table = capsys.readouterr().out
    assert "rows read" in table and "duplicates (whole input)" in table


def test_dead_letter_keeps_each_bad_line_with_file_and_line_number(dirty, tmp_path):
    folder, paths, _ = dirty
    output = tmp_path / "out"
    assert (
        preprocess.main(["--input", str(folder / "rides-*.csv"), "--output", str(output), "--block_rows", "500"]) == 0
    )
    errors = [
        json.loads(line)
        for path in published(str(output / "errors-*.jsonl"))
        for line in Path(path).read_text().splitlines()
    ]
    assert sorted(e["record"] for e in errors) == sorted(BAD_LINES)
    for error in errors:
        lines = Path(error["source"]).read_text().splitlines()
        assert lines[error["line"] - 1] == error["record"]
        assert error["reason"]


def test_batch_dedupe_counts_add_up_and_says_so(dirty, tmp_path):
    folder, paths, (train, val) = dirty
    output = tmp_path / "out"
    # One block per file: duplicates within a file are removed, the cross-file copy is kept.
    assert preprocess.main(["--input", str(folder / "rides-*.csv"), "--output", str(output)]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["balanced"] and summary["dedupe"] == "batch"
    assert summary["train_rows"] + summary["val_rows"] == len(train) + len(val) + 1


def test_multi_processing_runner_end_to_end(dirty, tmp_path):
    folder, paths, (train, val) = dirty
    output = tmp_path / "out"
    done = run_cli(
        [
            "--input",
            str(folder / "rides-*.csv"),
            "--output",
            str(output),
            "--dedupe",
            "global",
            "--block_rows",
            "1000",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        ]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_rows(read_shards(str(output / "train-*-of-*.csv")), train)
    assert_same_rows(read_shards(str(output / "val-*-of-*.csv")), val)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["balanced"] and summary["train_rows"] == len(train)


def test_no_flags_runs_on_the_embedded_sample(isolated_local_paths):
    done = run_cli([])
    assert done.returncode == 0, done.stderr[-2000:]
    name = contract.processed_dir_name(MIN_DATE, MAX_DATE, "")
    outputs = list((isolated_local_paths / "data" / "processed").glob(f"{name}*"))
    assert len(outputs) == 1
    files = {Path(p).name for p in published(str(outputs[0] / "*"))}
    assert {"train-00000-of-00001.csv", "val-00000-of-00001.csv"} <= files and (outputs[0] / "summary.json").exists()
    assert any(f.startswith("errors-") and f.endswith(".jsonl") for f in files)
    summary = json.loads((outputs[0] / "summary.json").read_text())
    assert summary["rows_read"] == default_sample.DEFAULT_SAMPLE_ROWS and summary["balanced"]
    assert "train rows" in done.stdout


def test_rerun_replaces_previous_shards(dirty, tmp_path):
    folder, paths, _ = dirty
    output = tmp_path / "out"
    assert preprocess.main(["--input", str(folder / "rides-*.csv"), "--output", str(output)]) == 0
    first = json.loads((output / "summary.json").read_text())["output"]["run"]
    assert preprocess.main(["--input", str(folder / "rides-*.csv"), "--output", str(output)]) == 0
    second = json.loads((output / "summary.json").read_text())["output"]["run"]
    assert second != first and not (output / first).exists()
    assert {Path(p).parent.name for p in output.glob("*/train-*.csv")} == {second}


def test_generated_raw_rides_match_taxifare_core(generated_rides_path, tmp_path):
    output = tmp_path / "out"
    assert preprocess.main(["--input", str(generated_rides_path), "--output", str(output), "--dedupe", "global"]) == 0
    train, val = expected_rows([generated_rides_path])
    assert_same_rows(read_shards(str(output / "train-*.csv")), train)
    assert_same_rows(read_shards(str(output / "val-*.csv")), val)
    assert json.loads((output / "summary.json").read_text())["rows_read"] == 8000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min_date", "2015-13-01"], "--min_date"),
        (["--min_date", "2015-02-01", "--max_date", "2015-01-01"], "after"),
        (["--input", "/nonexistent/rides-*.csv"], "no file matches"),
        (["--dedupe", "sometimes"], "--dedupe"),
        (["--source", "bigquery"], "--project"),
        (["--source", "bigquery", "--data_size", "10k", "--project", "p-123456"], "data size"),
        (["--source", "bigquery", "--project", "p-123456", "--read_method", "EXPORT"], "--temp_location"),
        (["--num_shards", "-1"], "--num_shards"),
        (["--val_start", "2016-01-01"], "--val_start"),
        # Beam only logs unknown flags and runs anyway; a typo must stop the run.
        (["--num_shard", "3"], "unknown flag --num_shard (did you mean --num_shards?)"),
        (["--bogus"], "unknown flag --bogus"),
        (["--runner", "DataflowRunner", "--bogus"], "unknown flag --bogus"),  # Beam's logs not let through either
        (["--out", "/tmp/x"], "unknown flag --out (did you mean --output?)"),  # no prefix matching
        # Beam would try to create a bucket (minutes offline) or reject the project late.
        (
            [
                "--source",
                "bigquery",
                "--runner",
                "DataflowRunner",
                "--project",
                "my-project",
                "--region",
                "europe-west1",
                "--temp_location",
                "/tmp/x",
            ],
            "must be a gs:// path",
        ),
        (
            [
                "--source",
                "bigquery",
                "--runner",
                "DataflowRunner",
                "--project",
                "my-project",
                "--region",
                "europe-west1",
                "--temp_location",
                "gs://b/tmp",
            ],
            "valid bucket name",
        ),
        (
            [
                "--source",
                "bigquery",
                "--runner",
                "DataflowRunner",
                "--project",
                "p",
                "--region",
                "europe-west1",
                "--temp_location",
                "gs://my-bucket/tmp",
                "--dry_run",
                "True",
            ],
            "Invalid Project ID",
        ),
    ],
)
def test_bad_flags_stop_with_one_line_and_exit_2(args, message):
    done = run_cli(args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr


def test_bad_header_stops_with_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c\n1,2,3\n")
    done = run_cli(["--input", str(path), "--output", str(tmp_path / "out")])
    assert done.returncode == 2 and "header lacks" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_documents_every_flag():
    done = run_cli(["--help"])
    assert done.returncode == 0
    for flag in (
        "--source",
        "--input",
        "--output",
        "--data_size",
        "--min_date",
        "--max_date",
        "--val_start",
        "--dedupe",
        "--num_shards",
        "--block_rows",
        "--bq_project",
        "--bq_dataset",
        "--read_method",
        "--bigquery_emulator",
        "--bigquery_timeout",
        "--runner",
        "--direct_num_workers",
        "--project",
        "--temp_location",
    ):
        assert flag in done.stdout, flag


def test_explicit_direct_runner_works_offline(dirty, tmp_path):
    # Beam's DirectRunner first tries to download the Prism binary; offline it must fall back and finish.
    folder, paths, (train, val) = dirty
    output = tmp_path / "out"
    done = run_cli(["--input", str(paths[0]), "--output", str(output), "--runner", "DirectRunner"])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["balanced"] and summary["config"]["runner"] == "DirectRunner"


def test_fixed_shard_count_gives_balanced_shards(dirty, tmp_path):
    folder, paths, (train, val) = dirty
    output = tmp_path / "out"
    assert (
        preprocess.main(
            ["--input", str(folder / "rides-*.csv"), "--output", str(output), "--num_shards", "3", "--dedupe", "global"]
        )
        == 0
    )
    shards = [Path(p) for p in published(str(output / "train-*-of-00003.csv"))]
    assert len(shards) == 3
    sizes = [len(path.read_text().splitlines()) for path in shards]
    assert sum(sizes) == len(train) and max(sizes) - min(sizes) <= 2
    assert_same_rows(read_shards(str(output / "train-*.csv")), train)
