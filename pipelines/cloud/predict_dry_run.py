"""Build batch prediction's real Dataflow job offline (Beam's --dry_run).

This is what `scripts/submit_dataflow.py --dry_run` shows.

    job = build_predict_dry_run_job(dataflow.predict_argv(settings, name, "gs://b/rides-*.csv", run=RUN))
    job.proto_pipeline        # the pipeline proto Dataflow would receive; job.proto: the job request

`argv` is what `python -m pipelines.predict` takes (its batch flags, then Beam's); the
graph is `pipelines.batch_predict.build_predict`. Preprocessing's twin is
`pipelines.preprocessing.pipeline.build_dry_run_job`.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines import batch_predict
from pipelines.cloud import dataflow
from pipelines.predict import build_parser
from taxifare_core import storage
from taxifare_core.training import registry


def build_predict_dry_run_job(argv: list[str]):
    """Build the real Dataflow job of `python -m pipelines.predict argv` without submitting it.

    Offline as build_dry_run_job: the input, output and registry are not touched, so
    the run must be named (`--run`; finding the latest one would list the registry).
    Returns Beam's apiclient.Job; DataflowError (one line) for a missing setting.
    """
    args, beam_args = build_parser().parse_known_args(argv)
    options = dataflow.dry_run_options(beam_args)
    if not (args.input and args.output):
        raise dataflow.DataflowError("batch prediction needs --input GLOB and --output DIR")
    if not args.run:
        raise dataflow.DataflowError(
            "a dry run of batch prediction needs --run NAME (the latest run is only "
            "found by listing the registry, which a dry run does not touch)"
        )
    model_uri = storage.join(registry.registry_root(args.registry), args.run, registry.MODEL_FILE)
    pipeline = beam.Pipeline(options=options)
    batch_predict.build_predict(pipeline, args.input, args.output, model_uri, name_by_file=True)
    return pipeline.run().job
