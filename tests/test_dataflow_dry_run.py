"""Offline proof that Dataflow would get a whole job: Beam's --dry_run builds it, sdist included, and stops.

    .venv/bin/python -m pytest tests/test_dataflow_dry_run.py -q

No network and no credentials: Beam returns once the job and its pipeline proto are
built, before any call to Google Cloud. What only a real project can show (IAM,
quotas, the workers installing the sdist) is listed in docs/dataflow.md.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions
from apache_beam.portability.api import beam_runner_api_pb2

from dataflow_helpers import assert_feeds, run_submit_script, transforms_by_name
from pipelines.cloud import dataflow
from pipelines.preprocessing.options import parse_args, resolve_config
from pipelines.preprocessing.pipeline import build_dry_run_job, build_preprocess, write_outputs

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dataflow.DataflowSettings(
    "taxifare-test-project",
    "europe-west1",
    "taxifare-test-bucket",
    "runner@taxifare-test-project.iam.gserviceaccount.com",
)
IMAGE = "europe-docker.pkg.dev/taxifare-test-project/images/taxifare-worker:1"
# BigQuery -> parse -> clean -> encode -> split -> write, each feeding the next.
GRAPH_PATH = (
    "ReadBigQuery",
    "ParseBigQueryRows",
    "Preprocess/FilterDateWindow",
    "Preprocess/Clean",
    "Preprocess/Encode",
    "Preprocess/Split",
    "Preprocess/FormatTrain",
    "WriteTrain",
)
WRITES = ("WriteTrain", "WriteVal", "WriteErrors", "WriteRaw", "WriteStats")
BASE_ARGV = [
    "--source",
    "bigquery",
    "--runner",
    "DataflowRunner",
    "--project",
    "p-project",
    "--region",
    "europe-west1",
    "--temp_location",
    "gs://b-bucket/tmp",
]


@pytest.fixture(scope="module")
def argv() -> list[str]:
    """The flags `make dataflow` would pass, every optional setting given."""
    return dataflow.preprocess_argv(
        SETTINGS,
        dataflow.job_name(datetime(2026, 7, 6, 17, 18, tzinfo=UTC)),
        data_size="200k",
        max_num_workers=7,
        machine_type="n2-standard-4",
        sdk_container_image=IMAGE,
    )


@pytest.fixture(scope="module")
def job(argv):
    """The real Dataflow job, built with --dry_run True (about 5 s: it builds the sdist)."""
    return build_dry_run_job(argv)


def test_job_graph_reads_bigquery_then_parses_cleans_encodes_splits_and_writes(job):
    transforms = transforms_by_name(job)
    for label in (*GRAPH_PATH, *WRITES):
        assert label in transforms, f"{label} missing from the job graph"
    assert_feeds(transforms, GRAPH_PATH)
    statistics = [name for name in transforms if name.startswith("Statistics/")]
    assert "Statistics/CombineTrain" in statistics, statistics
    split_outputs = set(transforms["Preprocess/Split"].outputs.values())
    assert split_outputs & set(transforms["Statistics/CombineTrain"].inputs.values())
    assert split_outputs & set(transforms["Statistics/CombineVal"].inputs.values())
    assert set(transforms["Statistics"].outputs.values()) & set(transforms["WriteStats"].inputs.values())
    # The raw cache comes from the parse's own batches: the rows are batched once.
    raw = set(transforms["ParseBigQueryRows/ParseRecordBatch"].outputs.values())
    assert raw & set(transforms["WriteRaw"].inputs.values())
    batching = [name for name in transforms if name.endswith("BatchRecords")]
    assert batching == ["ParseBigQueryRows/BatchRecords"]
    read = transforms["ReadBigQuery/Read"]
    assert read.spec.urn or read.subtransforms


def test_job_is_named_and_configured_from_the_settings(job, argv):
    assert job.proto.name == "taxifare-preprocess-20260706-171800"
    options = job.options
    assert options.view_as(WorkerOptions).max_num_workers == 7
    assert options.view_as(WorkerOptions).machine_type == "n2-standard-4"
    assert options.view_as(GoogleCloudOptions).service_account_email == SETTINGS.service_account
    config = resolve_config(*parse_args(argv))
    assert config.output == "gs://taxifare-test-bucket/processed/processed_2009-01-01_2015-01-01_200k"
    assert config.table == "wagon-public-datasets.taxifare.raw_200k"
    images = []
    for environment in job.proto_pipeline.components.environments.values():
        assert environment.urn == "beam:env:docker:v1"
        images.append(beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image)
    assert images and set(images) == {IMAGE}


def test_the_package_sdist_is_built_and_staged_for_the_workers(job):
    staged = dataflow.staged_files(job)
    assert "workflow.tar.gz" in staged, staged
    assert "pickled_main_session" not in staged  # nothing relies on save_main_session
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        names = {Path(*Path(name).parts[1:]).as_posix(): name for name in sdist.getnames()}
        top_level = sdist.extractfile(names["taxifare.egg-info/top_level.txt"]).read().decode().split()
    for needed in (
        "pyproject.toml",
        "PKG-INFO",
        "taxifare_core/contract.py",
        "taxifare_core/features.py",
        "pipelines/preprocess.py",
        "pipelines/preprocessing/parse.py",
        "pipelines/preprocessing/sources.py",
        "pipelines/preprocessing/statistics.py",
        "taxifare_core/stats.py",
    ):
        assert needed in names, f"{needed} not in the sdist"
    # What pip installs on a worker: the two packages only; MANIFEST.in keeps tests/ out of the sdist.
    assert sorted(top_level) == ["pipelines", "taxifare_core"]
    assert not any(name.startswith((".venv", "scripts/", "tests/")) for name in names)


def test_workers_dependencies_leave_tensorflow_out():
    """Importing the pipeline never imports TensorFlow, and the shipped requirements do not name it."""
    code = (
        "import sys, pipelines.preprocess, pipelines.cloud.dataflow, pipelines.local.bigquery_emulator; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    import tomllib

    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [r for r in requirements if re.match(r"(tensorflow|keras)\b", r)]


def test_every_dofn_is_importable_from_the_package():
    """DoFns and mapped functions live in modules the workers import: none comes from __main__."""
    # The graph does not depend on the runner; the local one keeps Beam from checking the gs:// bucket.
    flags, options = parse_args(["--source", "bigquery", "--project", "p-project"])
    config = resolve_config(flags, options)
    pipeline = beam.Pipeline(options=options)
    write_outputs(build_preprocess(pipeline, config), config)
    functions = []

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            fn = getattr(node.transform, "fn", None)
            if fn is not None:
                wrapped = getattr(fn, "_fn", None)  # beam.Map / FlatMap wrap a function
                functions.append(wrapped if callable(wrapped) and not isinstance(wrapped, type) else type(fn))

    pipeline.visit(Collect())
    ours = [f for f in functions if f.__module__.startswith(("pipelines", "taxifare_core"))]
    assert len(ours) >= 6
    for function in functions:
        assert function.__module__ != "__main__", function
        module = importlib.import_module(function.__module__)
        assert getattr(module, function.__qualname__.split(".")[0], None) is not None, function


@pytest.mark.parametrize(
    "change, message",
    [
        (("--project", None), "needs --project"),
        (("--region", None), "needs --region"),
        (("--temp_location", None), "needs --temp_location"),
        (("--temp_location", "/tmp/beam"), "--temp_location must be a gs:// path"),
        (("--staging_location", "staging/"), "--staging_location must be a gs:// path"),
    ],
)
def test_bad_dataflow_settings_are_refused_before_beam_runs(change, message):
    """A missing project or a local temp location stop at once with one line (Beam would hang on them)."""
    flag, value = change
    argv = list(BASE_ARGV)
    if flag in argv:
        index = argv.index(flag)
        del argv[index : index + 2]
    if value is not None:
        argv += [flag, value]
    started = time.monotonic()
    with pytest.raises(dataflow.DataflowError, match=re.escape(message)) as error:
        build_dry_run_job(argv)
    assert "\n" not in str(error.value)
    assert time.monotonic() - started < 10


def test_settings_come_from_the_environment():
    settings = dataflow.settings_from_env(
        {"GCP_PROJECT": "p-project", "GCP_REGION": "us-central1", "BUCKET": "gs://my-bucket/"}
    )
    assert settings == dataflow.DataflowSettings("p-project", "us-central1", "my-bucket", None)
    with pytest.raises(dataflow.DataflowError, match="missing environment settings GCP_REGION, BUCKET"):
        dataflow.settings_from_env({"GCP_PROJECT": "p-project"})
    with pytest.raises(dataflow.DataflowError, match="bucket name"):
        dataflow.settings_from_env({"GCP_PROJECT": "p", "GCP_REGION": "r", "BUCKET": "My Bucket"})


def test_job_names_are_timestamped_and_valid():
    assert re.fullmatch(r"taxifare-preprocess-\d{8}-\d{6}", dataflow.job_name())
    with pytest.raises(dataflow.DataflowError, match="job name"):
        dataflow.check_job_name("Taxifare_Job")


def test_submit_script_dry_run_builds_the_job():
    done = run_submit_script(
        "--dry_run",
        "--data_size",
        "all",
        "--",
        "--dedupe",
        "global",
        env={"GCP_PROJECT": "p-project", "GCP_REGION": "europe-west1", "BUCKET": "b-bucket"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"job taxifare-preprocess-\d{8}-\d{6} \(dry run", done.stdout)
    assert "workflow.tar.gz" in done.stdout and "WriteTrain" in done.stdout
    assert "--output gs://b-bucket/processed/processed_2009-01-01_2015-01-01_all" in done.stderr
    assert "--dedupe global" in done.stderr


def test_submit_script_stops_on_a_missing_setting_with_one_line():
    done = run_submit_script("--dry_run", env={"GCP_PROJECT": "p-project"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "GCP_REGION, BUCKET" in done.stderr and "Traceback" not in done.stderr
