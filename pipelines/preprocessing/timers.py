"""Per-batch stage timers: Beam distributions of microseconds, summed into summary.json's "stages".

    timer = stage_timer("parse")              # in a DoFn's __init__
    started = time.perf_counter(); ...; record_since(timer, started)

`pipelines.preprocessing.summary.stages_from_result` reads them back from the finished pipeline.
"""

from __future__ import annotations

import time

from apache_beam.metrics import Metrics

# Stage-time distributions (microseconds per batch) live in the pipeline's counter namespace.
STAGE_NAMESPACE = "taxifare"
STAGE_PREFIX = "stage_us_"


def stage_timer(stage: str):
    """A distribution of one stage's time per batch, in microseconds (record with `record_since`)."""
    return Metrics.distribution(STAGE_NAMESPACE, STAGE_PREFIX + stage)


def record_since(distribution, started: float) -> None:
    """Record the time since `started` (time.perf_counter()) in a stage distribution."""
    distribution.update(int((time.perf_counter() - started) * 1e6))
