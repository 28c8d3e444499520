"""What the Dataflow dry-run tests share: the submit script with chosen GCP settings, and reading a built job's graph.

from dataflow_helpers import assert_feeds, run_submit_script, transforms_by_name
done = run_submit_script("--dry_run", env={"GCP_PROJECT": "p-project"})
"""

from __future__ import annotations

import os
import subprocess

from pipelines.cloud import dataflow
from process_helpers import run_script


def run_submit_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """scripts/submit_dataflow.py with only the given GCP settings in the environment."""
    clean = {k: v for k, v in os.environ.items() if k not in dataflow.REQUIRED_ENV + (dataflow.ENV_SERVICE_ACCOUNT,)}
    return run_script("submit_dataflow.py", *args, env={**clean, **env}, timeout=300)


def transforms_by_name(job) -> dict:
    """The pipeline proto's transforms, by label."""
    return {t.unique_name: t for t in job.proto_pipeline.components.transforms.values()}


def assert_feeds(transforms: dict, path: tuple[str, ...]) -> None:
    """Each transform of `path` feeds the next one."""
    for producer, consumer in zip(path, path[1:]):
        outputs = set(transforms[producer].outputs.values())
        assert outputs & set(transforms[consumer].inputs.values()), f"{producer} does not feed {consumer}"
