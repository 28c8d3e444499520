"""The statistics in the Beam pass: ComputeStatistics on TestPipeline, runs of the pipeline with drift, the report.

.venv/bin/python -m pytest tests/test_statistics_pipeline.py
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from pipelines import preprocess
from pipelines import report as report_cli
from pipelines.preprocessing.encode import ProcessedBatch, encode_rides
from pipelines.preprocessing.statistics import ComputeStatistics, FeatureStatisticsFn
from pipelines.preprocessing.threads import MIN_ROWS_PER_THREAD
from pipelines.run_statistics import EXIT_DRIFT
from taxifare_core import contract, stats
from taxifare_core.cleaning import clean
from taxifare_core.generate import generate_rides
from taxifare_core.parsing import parse_frame
from taxifare_core.report import SECTIONS
from taxifare_core.storage import outputs

SAMPLE_DATES = ["--min_date", "2009-01-01", "--max_date", "2015-07-01"]


def processed_batches(n_rows: int, seed: int, pieces: int) -> list[ProcessedBatch]:
    typed, reasons = parse_frame(generate_rides(n_rows, seed)[list(contract.RAW_COLUMNS)])
    batch = encode_rides(clean(typed[reasons.isna().to_numpy()]).kept)
    cuts = np.linspace(0, len(batch), pieces + 1).astype(int)
    return [ProcessedBatch(batch.rows[a:b], batch.pickup_ns[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def test_compute_statistics_on_test_pipeline_matches_one_pass():
    train, val = processed_batches(3000, 1, 5), processed_batches(400, 2, 2)
    expected = {
        name: stats.finalize(
            stats.batch_accumulator(
                np.concatenate([b.rows for b in batches]), np.concatenate([b.pickup_ns for b in batches])
            )
        )
        for name, batches in (("train", train), ("val", val))
    }

    def check(elements):
        if len(elements) != 1:
            raise BeamAssertException(f"{len(elements)} statistics elements, expected 1")
        splits = json.loads(elements[0])["splits"]
        for name in ("train", "val"):
            got, want = splits[name], expected[name]
            if got["rows"] != want["rows"] or got["rides_per_month"] != want["rides_per_month"]:
                raise BeamAssertException(f"{name}: rows or months differ")
            for a, b in zip(got["columns"], want["columns"]):
                if (
                    a["histogram"] != b["histogram"]
                    or not np.isclose(a["mean"], b["mean"], rtol=1e-12)
                    or not np.isclose(a["std"], b["std"], rtol=1e-9)
                ):
                    raise BeamAssertException(f"{name} {a['name']} differs")

    with test_pipeline.TestPipeline() as pipeline:
        batches = {
            "train": pipeline | "Train" >> beam.Create(train, reshuffle=True),
            "val": pipeline | "Val" >> beam.Create(val, reshuffle=True),
        }
        assert_that(batches | ComputeStatistics(), check)


def test_a_big_batch_split_over_two_threads_gives_the_one_pass_statistics():
    """FeatureStatisticsFn cuts a batch of 2 x MIN_ROWS_PER_THREAD rows or more in halves on two threads."""
    [batch] = processed_batches(50_000, 3, 1)
    assert len(batch) >= 2 * MIN_ROWS_PER_THREAD
    combine = FeatureStatisticsFn(threads=2)
    got = combine.extract_output(combine.add_input(combine.create_accumulator(), batch))
    want = stats.finalize(stats.batch_accumulator(batch.rows, batch.pickup_ns))
    assert got["rows"] == want["rows"] and got["rides_per_month"] == want["rides_per_month"]
    for a, b in zip(got["columns"], want["columns"]):
        assert a["histogram"] == b["histogram"] and (a["min"], a["max"]) == (b["min"], b["max"]), a["name"]
        assert np.isclose(a["mean"], b["mean"], rtol=1e-12) and np.isclose(a["std"], b["std"], rtol=1e-9), a["name"]


def test_an_empty_split_gets_empty_statistics():
    def check(elements):
        splits = json.loads(elements[0])["splits"]
        if splits["val"]["rows"] != 0 or splits["train"]["rows"] == 0:
            raise BeamAssertException(f"rows {splits['train']['rows']} / {splits['val']['rows']}")

    with test_pipeline.TestPipeline() as pipeline:
        train = pipeline | "Train" >> beam.Create(processed_batches(300, 3, 1))
        val = pipeline | "Val" >> beam.Create([]).with_output_types(ProcessedBatch)
        assert_that({"train": train, "val": val} | ComputeStatistics(), check)


# --- whole runs on generated rides (taxifare_core.generate, as the real sample: 2009 to June 2015) ---


def run_preprocess(input_csv: Path, output: Path, *flags: str) -> int:
    return preprocess.main(["--input", str(input_csv), "--output", str(output), *SAMPLE_DATES, *flags])


@pytest.fixture(scope="module")
def sample_runs(generated_rides_raw, tmp_path_factory):
    """The generated rides, an unchanged copy and a copy with fares x 1.5, each preprocessed; {name: (folder, exit)}."""
    root = tmp_path_factory.mktemp("drift")
    original = root / "sample.csv"
    generated_rides_raw.to_csv(original, index=False)
    copy = root / "copy" / "sample.csv"
    copy.parent.mkdir()
    generated_rides_raw.to_csv(copy, index=False)
    dearer = generated_rides_raw.copy()
    dearer[contract.LABEL_COLUMN] = (pd.to_numeric(dearer[contract.LABEL_COLUMN]) * 1.5).round(2).astype(str)
    dearer_csv = root / "dearer" / "sample.csv"
    dearer_csv.parent.mkdir()
    dearer.to_csv(dearer_csv, index=False)
    runs = {"reference": (root / "out_reference", run_preprocess(original, root / "out_reference"))}
    runs["copy"] = (
        root / "out_copy",
        run_preprocess(copy, root / "out_copy", "--compare_to", str(root / "out_reference"), "--fail_on_drift"),
    )
    runs["dearer"] = (
        root / "out_dearer",
        run_preprocess(
            dearer_csv,
            root / "out_dearer",
            "--compare_to",
            str(root / "out_reference" / "stats.json"),
            "--fail_on_drift",
        ),
    )
    return runs


def published(folder: Path, name: str) -> Path:
    """OUTPUT/name as published: inside the run folder the manifest names (taxifare_core.storage.outputs)."""
    return Path(outputs.published_path(str(folder / name)))


def kept(folder: Path) -> Path:
    """The one run folder a run stopped by --fail_on_drift kept for inspection (it is not published)."""
    [run] = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(outputs.RUN_PREFIX)]
    return run


def load(folder: Path, name: str = "stats.json") -> dict:
    return json.loads(published(folder, name).read_text())


def test_every_run_writes_stats_and_report_with_val_against_train(sample_runs):
    folder, code = sample_runs["reference"]
    assert code == 0
    payload = load(folder)
    summary = load(folder, "summary.json")
    assert payload["splits"]["train"]["rows"] == summary["train_rows"] > 7000
    assert payload["splits"]["val"]["rows"] == summary["val_rows"] > 0
    drift = payload["drift"]
    assert drift["reference"] == "train (this run)" and drift["current"] == "val (this run)"
    assert drift["expected"] == ["days_since_2009_scaled", "month"]
    assert not set(drift["expected"]) & set(drift["flagged"])
    assert drift["scores"]["days_since_2009_scaled"] > 1
    assert set(summary["stages"]) >= {"parse", "filter_clean", "dedupe", "encode", "statistics", "format", "other"}
    assert all(s["seconds"] >= 0 for s in summary["stages"].values())
    assert summary["stages"]["encode"]["batches"] >= 1
    assert published(folder, "report.html").stat().st_size > 10_000
    assert not (published(folder, "stats.json").parent / "stats-pipeline.json").exists()


def test_an_unchanged_copy_is_flagged_on_nothing(sample_runs):
    folder, code = sample_runs["copy"]
    drift = load(folder)["drift"]
    assert code == 0
    assert drift["reference"] == str(published(sample_runs["reference"][0], "stats.json"))
    assert drift["flagged"] == [] and drift["expected"] == []
    assert all(score == 0 for score in drift["scores"].values())


def test_fares_times_one_and_a_half_are_flagged_on_fare_amount_and_fail_the_run(sample_runs):
    folder, code = sample_runs["dearer"]
    drift = json.loads((kept(folder) / "stats.json").read_text())["drift"]
    assert drift["flagged"] == ["fare_amount"], drift["scores"]
    assert drift["scores"]["fare_amount"] > 0.2
    assert code == EXIT_DRIFT  # --fail_on_drift: everything written, kept for inspection, not published
    assert "This run was NOT published" in (kept(folder) / "report.html").read_text()
    assert not (folder / "summary.json").exists() and (kept(folder) / "summary.json").exists()


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.tags, self.urls, self.images = set(), [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("src", "href"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        self.images += tag == "svg"


def test_report_parses_holds_every_section_and_references_nothing_outside(sample_runs):
    folder, _ = sample_runs["dearer"]
    text = (kept(folder) / "report.html").read_text()
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert set(SECTIONS) <= parser.ids
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.images >= 10  # funnel, 6 distributions, months, 2 district charts: inline SVG
    assert parser.urls == []
    assert not re.search(r"(https?:|ftp:)?//[a-z0-9]|url\(|@import", text, re.I)
    assert '<tr class="flagged"><td class="name">fare_amount</td>' in text


def test_report_cli_regenerates_against_a_reference(sample_runs, tmp_path, capsys):
    folder, _ = sample_runs["copy"]
    reference, _ = sample_runs["dearer"]
    out = tmp_path / "r.html"
    assert report_cli.main([str(folder), "--compare_to", str(kept(reference) / "stats.json"), "--out", str(out)]) == 0
    text = out.read_text()
    assert (
        '<tr class="flagged"><td class="name">fare_amount</td>' in text and ">reference<" in text
    )  # the reference drawn beside train and val
    assert report_cli.main([str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make_reference, message",
    [
        (lambda root: root / "missing", "no statistics file found"),
        (lambda root: root / "summary.json", "is not a statistics file"),
    ],
)
def test_a_bad_compare_to_stops_with_one_line_before_the_pipeline_runs(tmp_path, capsys, make_reference, message):
    (tmp_path / "summary.json").write_text('{"rows_read": 1}')
    (tmp_path / "in.csv").write_text(",".join(contract.RAW_COLUMNS) + "\n")
    output = tmp_path / "out"
    code = run_preprocess(tmp_path / "in.csv", output, "--compare_to", str(make_reference(tmp_path)))
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not output.exists()


def test_a_run_that_keeps_no_row_still_writes_empty_statistics_and_a_report(tmp_path):
    (tmp_path / "in.csv").write_text(",".join(contract.RAW_COLUMNS) + "\n4.5,2013-07-06 17:18:00 UTC,0,0,0,0,1\n")
    assert run_preprocess(tmp_path / "in.csv", tmp_path / "out", "--allow_empty") == 0
    payload = load(tmp_path / "out")
    assert [payload["splits"][name]["rows"] for name in ("train", "val")] == [0, 0]
    assert payload["drift"]["flagged"] == [] and published(tmp_path / "out", "report.html").exists()
