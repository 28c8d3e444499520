"""Offline proof that Dataflow would get a whole batch-prediction job: Beam's --dry_run builds it and stops.

    .venv/bin/python -m pytest tests/test_dataflow_predict_dry_run.py -q

What is built and checked here: the job graph (gs:// CSV blocks -> prepare -> RunInference
-> predictions and dead letter to gs://), the sdist and the TensorFlow requirements staged
for the workers, the options. What only a real project shows (workers installing
TensorFlow, reading the gs:// model, IAM) is listed in docs/dataflow-batch-predict.md.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions
from apache_beam.portability.api import beam_runner_api_pb2

from dataflow_helpers import assert_feeds, run_submit_script, transforms_by_name
from pipelines import predict
from pipelines.cloud import dataflow
from pipelines.cloud.predict_dry_run import build_predict_dry_run_job

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dataflow.DataflowSettings("taxifare-test-project", "europe-west1", "taxifare-test-bucket")
NAME = dataflow.job_name(datetime(2026, 7, 6, 17, 18, tzinfo=UTC), prefix=dataflow.PREDICT_JOB_NAME_PREFIX)
INPUT = "gs://taxifare-test-bucket/rides/rides-*.csv"
RUN = "20260706T171800.000000Z"
IMAGE = "europe-docker.pkg.dev/taxifare-test-project/images/taxifare-predict:1"
# Rides -> prepared blocks -> the model -> text -> the predictions sink.
GRAPH_PATH = (
    "PredictRides/ReadCsv",
    "PredictRides/Prepare",
    "PredictRides/RunInference",
    "PredictRides/KeepFiniteFares",
    "PredictRides/FormatPredictions",
    "WritePredictions",
)


@pytest.fixture(scope="module")
def argv() -> list[str]:
    return dataflow.predict_argv(SETTINGS, NAME, INPUT, run=RUN, max_num_workers=3)


@pytest.fixture(scope="module")
def job(argv):
    """The real Dataflow job, built with --dry_run True (builds the sdist, a few seconds)."""
    return build_predict_dry_run_job(argv)


def test_job_graph_reads_prepares_prices_and_writes_both_outputs(job):
    transforms = transforms_by_name(job)
    for label in (*GRAPH_PATH, "WriteDeadLetter"):
        assert label in transforms, f"{label} missing from the job graph"
    assert_feeds(transforms, GRAPH_PATH)
    # Both kinds of dead letter (rides that cannot be prepared, fares that are not finite) meet, then the sink.
    merged = set(transforms["PredictRides/AllDeadLetters"].inputs.values())
    assert set(transforms["PredictRides/Prepare"].outputs.values()) & merged
    assert set(transforms["PredictRides/KeepFiniteFares"].outputs.values()) & merged
    assert set(transforms["PredictRides/AllDeadLetters"].outputs.values()) & set(
        transforms["WriteDeadLetter"].inputs.values()
    )


def test_job_writes_to_the_bucket_with_the_registry_model(job, argv):
    assert job.proto.name == "taxifare-predict-20260706-171800"
    assert argv[argv.index("--output") + 1] == "gs://taxifare-test-bucket/predictions/taxifare-predict-20260706-171800"
    assert argv[argv.index("--registry") + 1] == "gs://taxifare-test-bucket/training_outputs"
    assert job.options.view_as(WorkerOptions).max_num_workers == 3


def test_workers_get_the_package_and_tensorflow(job):
    staged = dataflow.staged_files(job)
    assert "workflow.tar.gz" in staged and "requirements.txt" in staged, staged
    shipped = [
        line
        for line in Path(staged["requirements.txt"]).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    pinned = [r for r in extra if re.match(r"tensorflow\b", r)]
    assert shipped == pinned, "requirements-predict.txt drifted from the train extra"
    assert job.options.view_as(SetupOptions).requirements_cache == "skip"  # nothing downloaded at submission


def test_a_worker_image_replaces_the_requirements_file():
    argv = dataflow.predict_argv(SETTINGS, NAME, INPUT, run=RUN, sdk_container_image=IMAGE)
    assert "--requirements_file" not in argv
    job = build_predict_dry_run_job(argv)
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
        for e in job.proto_pipeline.components.environments.values()
    }
    assert images == {IMAGE}
    assert "requirements.txt" not in dataflow.staged_files(job)


@pytest.mark.parametrize("field", ["input_glob", "output", "registry"])
def test_local_paths_are_refused_for_dataflow(field):
    paths = {"input_glob": INPUT, "output": None, "registry": None, field: "/tmp/local"}
    with pytest.raises(dataflow.DataflowError, match="must be a gs:// path"):
        dataflow.predict_argv(SETTINGS, NAME, **paths)


def test_a_dry_run_needs_a_named_run():
    with pytest.raises(dataflow.DataflowError, match="needs --run NAME"):
        build_predict_dry_run_job(dataflow.predict_argv(SETTINGS, NAME, INPUT))


def test_predict_cli_refuses_an_incomplete_dataflow_setting_in_one_line(capsys):
    code = predict.main(["--input", INPUT, "--output", "gs://taxifare-test-bucket/out", "--runner", "DataflowRunner"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs --project" in err


GCP_SETTINGS = {"GCP_PROJECT": "p-project", "GCP_REGION": "europe-west1", "BUCKET": "b-bucket"}


def test_submit_script_dry_run_builds_the_predict_job():
    done = run_submit_script(
        "--job", "predict", "--input", "gs://b-bucket/rides/*.csv", "--run", RUN, "--dry_run", env=GCP_SETTINGS
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"job taxifare-predict-\d{8}-\d{6} \(dry run", done.stdout)
    assert "WritePredictions" in done.stdout and "requirements.txt" in done.stdout
    assert "--requirements_file" in done.stderr
    missing = run_submit_script("--job", "predict", "--dry_run", env=GCP_SETTINGS)
    assert missing.returncode == 2 and "needs --input" in missing.stderr and "Traceback" not in missing.stderr


def test_predict_flags_are_refused_for_the_preprocess_job():
    done = run_submit_script("--input", "gs://b/x.csv", "--dry_run", env=GCP_SETTINGS)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--input belong to --job predict" in done.stderr
