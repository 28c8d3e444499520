"""Submit the preprocessing pipeline, or batch prediction, to Google Cloud Dataflow (`make dataflow`,
`make dataflow_predict`).

    export GCP_PROJECT=my-project GCP_REGION=europe-west1 BUCKET=my-bucket   # SERVICE_ACCOUNT optional
    python scripts/submit_dataflow.py --data_size 200k
    python scripts/submit_dataflow.py --data_size all --max_num_workers 8 --machine_type n2-standard-4
    python scripts/submit_dataflow.py --dry_run          # build the job offline; submits nothing
    make dataflow ARGS="--data_size all"

    python scripts/submit_dataflow.py --job predict --input 'gs://my-bucket/rides/*.csv'
    python scripts/submit_dataflow.py --job predict --input 'gs://my-bucket/rides/*.csv' --run RUN --dry_run
    make dataflow_predict ARGS="--input gs://my-bucket/rides/*.csv"

Preprocessing (the default job) reads BigQuery (wagon-public-datasets.taxifare.raw_SIZE,
billed to GCP_PROJECT) and writes train/val/errors shards, the raw cache and summary.json under
gs://BUCKET/processed/processed_MIN_MAX_SIZE/. Batch prediction (`--job predict`) reads ride
CSVs from gs:// and writes predictions-*.csv and dead_letter-*.csv under
gs://BUCKET/predictions/JOB_NAME/, with the latest model of gs://BUCKET/training_outputs (or
--run, --registry); its workers also install requirements-predict.txt (TensorFlow) unless
--sdk_container_image names an image that has it. Both get a timestamped job name and the
project's sdist (--setup_file). It waits for the job and prints its counts; Ctrl-C stops waiting,
not the job. Flags after `--` pass through to the pipeline and Beam. A missing setting or bad
flag ends with one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import OneLineErrorParser  # noqa: E402
from pipelines.cloud.dataflow import (  # noqa: E402
    JOB_NAME_PREFIX,
    PREDICT_JOB_NAME_PREFIX,
    DataflowError,
    check_dataflow_options,
    job_name,
    predict_argv,
    preprocess_argv,
    settings_from_env,
    staged_files,
)
from pipelines.cloud.predict_dry_run import build_predict_dry_run_job  # noqa: E402
from pipelines.preprocessing.options import READ_METHODS, UsageError  # noqa: E402
from pipelines.preprocessing.pipeline import build_dry_run_job  # noqa: E402
from scripts.jobs import split_passthrough  # noqa: E402
from taxifare_core import contract  # noqa: E402

PROG = "submit_dataflow.py"
JOBS = ("preprocess", "predict")


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """The command line: this script's flags, and what follows `--`."""
    argv, extra = split_passthrough(argv)
    parser = OneLineErrorParser(
        prog=PROG,
        description="Submit `python -m pipelines.preprocess --source bigquery` (or, with --job predict, "
        "`python -m pipelines.predict`) to Dataflow. Settings "
        "come from the environment: GCP_PROJECT (runs the job, pays for BigQuery), GCP_REGION "
        "(e.g. europe-west1), BUCKET (a gs:// bucket name for tmp/, staging/ and processed/), "
        "SERVICE_ACCOUNT (optional: the workers' service account e-mail).",
        epilog="Anything after `--` is passed to the pipeline (pipelines.preprocess, or pipelines.predict "
        "with --job predict) and Beam unchanged, "
        "e.g. `-- --dedupe global --num_shards 8`.",
    )
    parser.add_argument(
        "--job",
        choices=JOBS,
        default="preprocess",
        help="preprocess: BigQuery -> processed shards (default); predict: batch prediction "
        "of gs:// ride CSVs with the registry's model",
    )
    parser.add_argument(
        "--data_size",
        choices=contract.DATA_SIZES,
        default=contract.DEFAULT_DATA_SIZE,
        help="BigQuery table raw_SIZE to read (default %(default)s)",
    )
    parser.add_argument(
        "--min_date", default=contract.DEFAULT_MIN_DATE, help="first pickup date, YYYY-MM-DD (default %(default)s)"
    )
    parser.add_argument(
        "--max_date", default=contract.DEFAULT_MAX_DATE, help="last pickup date, YYYY-MM-DD (default %(default)s)"
    )
    parser.add_argument(
        "--read_method",
        choices=READ_METHODS,
        default="DIRECT_READ",
        help="DIRECT_READ: BigQuery Storage Read API; EXPORT: export to Avro files "
        "under gs://BUCKET/tmp first (default %(default)s)",
    )
    parser.add_argument(
        "--max_num_workers",
        type=_positive,
        default=None,
        help="upper bound of Dataflow's autoscaling (default: Dataflow's)",
    )
    parser.add_argument(
        "--machine_type", default=None, help="worker machine type, e.g. n2-standard-4 (default: Dataflow's)"
    )
    parser.add_argument(
        "--sdk_container_image",
        default=None,
        help="custom worker image with the dependencies pre-installed (default: Beam's)",
    )
    parser.add_argument(
        "--job_name",
        default=None,
        help="Dataflow job name (default: taxifare-preprocess-YYYYMMDD-HHMMSS or taxifare-predict-..., UTC)",
    )
    predict = parser.add_argument_group("--job predict")
    predict.add_argument(
        "--input", default=None, metavar="GLOB", help="ride CSVs with a header on gs:// (required with --job predict)"
    )
    predict.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="gs:// folder for predictions and dead letter (default: gs://BUCKET/predictions/JOB_NAME)",
    )
    predict.add_argument(
        "--registry", default=None, help="gs:// model registry (default: gs://BUCKET/training_outputs)"
    )
    predict.add_argument(
        "--run",
        default=None,
        help="registry run whose model prices the rides (default: the latest; "
        "required with --dry_run, which does not list the registry)",
    )
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="build the full job (sdist included) offline and print it; submit nothing",
    )
    return parser.parse_args(argv), extra


def describe_job(job) -> str:
    """A few lines about a built job: name, transforms, staged files."""
    transforms = job.proto_pipeline.components.transforms.values()
    top = sorted(t.unique_name for t in transforms if t.unique_name.count("/") == 0 and t.subtransforms)
    return "\n".join(
        [
            f"job {job.proto.name} (dry run: built, not submitted)",
            f"  {len(transforms)} transforms; top level: {', '.join(top)}",
            f"  staged for the workers: {', '.join(staged_files(job))}",
        ]
    )


def main(argv=None) -> int:
    """Build the pipeline's flags from the environment, then submit (or dry-run) the job."""
    args, extra = parse_args(argv)
    predicting = args.job == "predict"
    module = "pipelines.predict" if predicting else "pipelines.preprocess"
    try:
        settings = settings_from_env()
        name = args.job_name or job_name(prefix=PREDICT_JOB_NAME_PREFIX if predicting else JOB_NAME_PREFIX)
        if predicting:
            if not args.input:
                raise DataflowError("--job predict needs --input gs://BUCKET/PATH/*.csv")
            pipeline_argv = predict_argv(
                settings,
                name,
                args.input,
                args.output,
                args.run,
                args.registry,
                args.max_num_workers,
                args.machine_type,
                args.sdk_container_image,
                tuple(extra),
            )
        else:
            given = [f"--{name}" for name in ("input", "output", "registry", "run") if getattr(args, name)]
            if given:
                raise DataflowError(f"{', '.join(given)} belong to --job predict")
            pipeline_argv = preprocess_argv(
                settings,
                name,
                args.data_size,
                args.min_date,
                args.max_date,
                args.read_method,
                args.max_num_workers,
                args.machine_type,
                args.sdk_container_image,
                tuple(extra),
            )
        from apache_beam.options.pipeline_options import PipelineOptions

        check_dataflow_options(PipelineOptions(pipeline_argv))
        print(f"{PROG}: python -m {module} {' '.join(pipeline_argv)}", file=sys.stderr)
        if args.dry_run:
            build = build_predict_dry_run_job if predicting else build_dry_run_job
            print(describe_job(build(pipeline_argv)))
            return 0
    except (DataflowError, UsageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if predicting:
        from pipelines import predict

        return predict.main(pipeline_argv)
    from pipelines import preprocess

    return preprocess.main(pipeline_argv)


if __name__ == "__main__":
    sys.exit(main())
