"""Big batches cut in slices on a few threads: numpy and Arrow release the GIL, so the work ends sooner.

    pool, workers = thread_pool(None)            # the machine's cores, at most 4; None for one
    slices = slice_count(len(batch), workers)    # 1 below MIN_ROWS_PER_THREAD rows per slice
    ...
    shutdown(pool)

Used by encoding and formatting (pipelines.preprocessing.encode) and the statistics
(pipelines.preprocessing.statistics); the result is the same as on one thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

# Below this many rows per slice, threads cost more than they save.
MIN_ROWS_PER_THREAD = 20_000


def thread_pool(threads: int | None) -> tuple[ThreadPoolExecutor | None, int]:
    """(a pool of `threads` or None for one, its size); default: the machine's cores, at most 4."""
    workers = max(1, min(threads or os.cpu_count() or 1, 4))
    return (ThreadPoolExecutor(workers) if workers > 1 else None), workers


def slice_count(rows: int, workers: int) -> int:
    """How many slices to cut a batch of `rows` into for `workers` threads."""
    return max(1, min(workers, rows // MIN_ROWS_PER_THREAD))


def shutdown(pool: ThreadPoolExecutor | None) -> None:
    """Stop a pool made by thread_pool."""
    if pool is not None:
        pool.shutdown()
