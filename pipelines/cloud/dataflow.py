"""Run the preprocessing pipeline on Google Cloud Dataflow, from environment settings.

    export GCP_PROJECT=my-project GCP_REGION=europe-west1 BUCKET=my-bucket
    python scripts/submit_dataflow.py --data_size 200k      # or: make dataflow ARGS="--data_size 200k"
    python scripts/submit_dataflow.py --dry_run             # build the Dataflow job offline, submit nothing

`preprocess_argv` turns the settings into `python -m pipelines.preprocess` flags:
BigQuery in, train/val/errors shards, the raw cache and summary.json out under
gs://BUCKET/processed/..., a timestamped job name, and `--setup_file pyproject.toml`
so Beam's stager builds this project's sdist (`python -m build --no-isolation --sdist`)
and Dataflow's workers pip-install `taxifare_core` and `pipelines` from it.
`check_dataflow_options` refuses what Beam would otherwise hang on (a local
--temp_location makes it try to create a bucket), and `build_dry_run_job` builds
the real job with Beam's `--dry_run True`: no network, no credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

from taxifare_core import contract

ENV_PROJECT, ENV_REGION, ENV_BUCKET, ENV_SERVICE_ACCOUNT = (
    "GCP_PROJECT", "GCP_REGION", "BUCKET", "SERVICE_ACCOUNT",
)  # fmt: skip
REQUIRED_ENV = (ENV_PROJECT, ENV_REGION, ENV_BUCKET)
DATAFLOW_RUNNER = "DataflowRunner"
# The project's build file: Beam's stager accepts a setup.py or a pyproject.toml.
SETUP_FILE = Path(__file__).resolve().parents[2] / "pyproject.toml"
JOB_NAME_PREFIX = "taxifare-preprocess"
PREDICT_JOB_NAME_PREFIX = "taxifare-predict"
# What batch prediction's workers need beyond the package: TensorFlow (the `train` extra's pin,
# tests/test_dataflow_predict_dry_run.py keeps the two equal). Workers pip-install it at start-up;
# "--requirements_cache skip" keeps the submitting machine from downloading it first.
PREDICT_REQUIREMENTS = SETUP_FILE.with_name("requirements-predict.txt")
# Bucket names (lowercase, digits, -_.), as Cloud Storage allows them.
_BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Dataflow job names: lowercase letter first, then lowercase, digits and hyphens.
_JOB_NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class DataflowError(ValueError):
    """A setting that would not give a valid Dataflow job; the message is one line."""


@dataclass(frozen=True)
class DataflowSettings:
    """Where the job runs and writes: project, region, bucket, optional worker service account."""

    project: str
    region: str
    bucket: str
    service_account: str | None = None

    @property
    def temp_location(self) -> str:
        """Beam's temporary files, and BigQuery EXPORT's Avro files."""
        return f"gs://{self.bucket}/tmp"

    @property
    def staging_location(self) -> str:
        """Where the sdist and the pipeline proto are uploaded."""
        return f"gs://{self.bucket}/staging"

    def output(self, min_date: str, max_date: str, data_size: str) -> str:
        """The job's output folder, named as the local runs name theirs."""
        return f"gs://{self.bucket}/processed/{contract.processed_dir_name(min_date, max_date, data_size)}"

    @property
    def registry(self) -> str:
        """The model registry the trainer writes with `--registry gs://BUCKET/training_outputs`."""
        return f"gs://{self.bucket}/training_outputs"

    def predictions(self, name: str) -> str:
        """A batch prediction job's output folder, named after the job."""
        return f"gs://{self.bucket}/predictions/{name}"


def settings_from_env(environ=None) -> DataflowSettings:
    """Read GCP_PROJECT, GCP_REGION, BUCKET (and SERVICE_ACCOUNT); DataflowError names what is missing."""
    environ = os.environ if environ is None else environ
    values = {name: (environ.get(name) or "").strip() for name in (*REQUIRED_ENV, ENV_SERVICE_ACCOUNT)}
    missing = [name for name in REQUIRED_ENV if not values[name]]
    if missing:
        raise DataflowError(
            f"missing environment setting{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "export GCP_PROJECT, GCP_REGION and BUCKET (see docs/dataflow.md)"
        )
    bucket = values[ENV_BUCKET].removeprefix("gs://").strip("/")
    if not _BUCKET_PATTERN.fullmatch(bucket):
        raise DataflowError(f"BUCKET must be a Cloud Storage bucket name (e.g. my-bucket), got {values[ENV_BUCKET]!r}")
    return DataflowSettings(values[ENV_PROJECT], values[ENV_REGION], bucket, values[ENV_SERVICE_ACCOUNT] or None)


def check_job_name(name: str) -> str:
    """The name if Dataflow accepts it; DataflowError otherwise."""
    if not _JOB_NAME_PATTERN.fullmatch(name):
        raise DataflowError(
            f"not a valid Dataflow job name: {name!r} (a lowercase letter, then lowercase letters, "
            "digits and hyphens, at most 63)"
        )
    return name


def job_name(now: datetime | None = None, prefix: str = JOB_NAME_PREFIX) -> str:
    """A timestamped Dataflow job name, e.g. taxifare-preprocess-20260706-171800 (UTC)."""
    return check_job_name(f"{prefix}-{(now or datetime.now(UTC)).strftime('%Y%m%d-%H%M%S')}")


def staged_files(job) -> dict[str, str]:
    """Staged name -> local file, of what a built job uploads for its workers (workflow.tar.gz: the sdist)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    paths = {}
    for environment in job.proto_pipeline.components.environments.values():
        for dependency in environment.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload)
            paths[role.staged_name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
    return dict(sorted(paths.items()))


def preprocess_argv(
    settings: DataflowSettings,
    name: str,
    data_size: str = contract.DEFAULT_DATA_SIZE,
    min_date: str = contract.DEFAULT_MIN_DATE,
    max_date: str = contract.DEFAULT_MAX_DATE,
    read_method: str = "DIRECT_READ",
    max_num_workers: int | None = None,
    machine_type: str | None = None,
    sdk_container_image: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The `python -m pipelines.preprocess` flags of one Dataflow run; `extra` passes through last."""
    argv = [
        "--source", "bigquery", "--data_size", data_size,
        "--min_date", min_date, "--max_date", max_date, "--read_method", read_method,
        "--output", settings.output(min_date, max_date, data_size),
    ]  # fmt: skip
    return argv + _worker_argv(settings, name, max_num_workers, machine_type, sdk_container_image) + list(extra)


def _worker_argv(
    settings: DataflowSettings, name: str, max_num_workers, machine_type, sdk_container_image
) -> list[str]:
    """The Dataflow flags both jobs share: where it runs, its name, what the workers install."""
    argv = [
        "--runner", DATAFLOW_RUNNER, "--project", settings.project, "--region", settings.region,
        "--temp_location", settings.temp_location, "--staging_location", settings.staging_location,
        "--job_name", check_job_name(name), "--setup_file", str(SETUP_FILE),
        # DoFns are importable from the package: nothing needs __main__ pickled.
        "--no_save_main_session",
    ]  # fmt: skip
    optional = {
        "--service_account_email": settings.service_account,
        "--max_num_workers": max_num_workers,
        "--machine_type": machine_type,
        "--sdk_container_image": sdk_container_image,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv


def predict_argv(
    settings: DataflowSettings,
    name: str,
    input_glob: str,
    output: str | None = None,
    run: str | None = None,
    registry: str | None = None,
    max_num_workers: int | None = None,
    machine_type: str | None = None,
    sdk_container_image: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The `python -m pipelines.predict` flags of one Dataflow batch prediction; `extra` passes through last.

    Rides from gs:// CSVs, predictions and dead letter to gs://BUCKET/predictions/NAME
    (or `output`), the model from gs://BUCKET/training_outputs (or `registry`): the
    latest run, or `run`. Workers get the package (--setup_file) and TensorFlow
    (requirements-predict.txt), unless a worker image has them (`sdk_container_image`).
    """
    for flag, value in (("--input", input_glob), ("--output", output), ("--registry", registry)):
        if value is not None and not value.startswith("gs://"):
            raise DataflowError(
                f"{flag} must be a gs:// path on Dataflow (workers cannot read this machine), got {value!r}"
            )
    argv = [
        "--input",
        input_glob,
        "--output",
        output or settings.predictions(name),
        "--registry",
        registry or settings.registry,
    ]
    if run:
        argv += ["--run", run]
    argv += _worker_argv(settings, name, max_num_workers, machine_type, sdk_container_image)
    if sdk_container_image is None:
        argv += ["--requirements_file", str(PREDICT_REQUIREMENTS), "--requirements_cache", "skip"]
    return argv + list(extra)


def is_dataflow(options: PipelineOptions) -> bool:
    """True when the options choose the DataflowRunner."""
    runner = options.view_as(StandardOptions).runner or ""
    return runner.rsplit(".", 1)[-1] == DATAFLOW_RUNNER


def _valid_gcs_path(path: str) -> bool:
    """True when Beam's own validator accepts `path` as gs://BUCKET/OBJECT."""
    from apache_beam.options.pipeline_options_validator import (
        PipelineOptionsValidator as Validator,
    )

    match = re.match(Validator.GCS_URI, path, re.DOTALL)
    return bool(
        match
        and match.group("BUCKET")
        and match.group("OBJECT")
        and re.fullmatch(Validator.GCS_BUCKET, match.group("BUCKET"))
    )


def check_dataflow_options(options: PipelineOptions) -> None:
    """Refuse, in one line, what Beam would reject late or hang on; no-op for other runners."""
    if not is_dataflow(options):
        return
    cloud = options.view_as(GoogleCloudOptions)
    if not cloud.project:
        raise DataflowError("the DataflowRunner needs --project YOUR_PROJECT (the project that runs the job)")
    if not cloud.region:
        raise DataflowError("the DataflowRunner needs --region (e.g. europe-west1)")
    if not cloud.temp_location:
        raise DataflowError("the DataflowRunner needs --temp_location gs://BUCKET/tmp")
    for flag, value in (("--temp_location", cloud.temp_location), ("--staging_location", cloud.staging_location)):
        if value and not value.startswith("gs://"):
            # Beam would try to create a default bucket instead, and wait minutes for it.
            raise DataflowError(f"{flag} must be a gs:// path on Dataflow, got {value!r}")
        if value and not _valid_gcs_path(value):
            # Same as above: Beam falls back to creating a default bucket.
            raise DataflowError(
                f"{flag} {value!r} is not gs://BUCKET/PATH with a valid bucket name "
                "(3-63 lowercase letters, digits, '-', '_' or '.')"
            )
    setup_file = options.view_as(SetupOptions).setup_file
    if setup_file and Path(setup_file).name not in ("setup.py", "pyproject.toml"):
        raise DataflowError(f"--setup_file must name a setup.py or pyproject.toml, got {setup_file!r}")
    if setup_file and not Path(setup_file).is_file():
        raise DataflowError(f"--setup_file {setup_file} does not exist")


def dry_run_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options for building a Dataflow job without submitting it (`--dry_run True` added).

    DataflowError (one line) unless the runner is Dataflow and its settings are usable.
    """
    options = PipelineOptions([*beam_args, "--dry_run", "True"])
    if not is_dataflow(options):
        raise DataflowError("a Dataflow dry run needs --runner DataflowRunner")
    check_dataflow_options(options)
    return options
