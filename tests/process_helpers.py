"""Child processes for tests: the project's scripts, and its service started and stopped as the scripts do
(scripts/jobs.py).

from process_helpers import run_script, server_url, start_server, stop_process
done = run_script("crash_test.py", "--help", timeout=60)
process = start_server("--registry", folder, "--port", "0")
url = server_url(process, 120)  # '' when it printed no address in time
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `pytest` (not `python -m pytest`) puts only tests/ on the path; scripts/ is a folder of the checkout.
sys.path.insert(0, str(ROOT))

from scripts.jobs import serve_command, server_url, stop_process  # noqa: E402

__all__ = ["run_script", "server_url", "start_server", "stop_process"]


def start_server(*flags: str, stderr=subprocess.PIPE, nofile: tuple[int, int] | None = None) -> subprocess.Popen:
    """`python -m pipelines.serve FLAGS` with this worktree's code first on the path (and an open-file limit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return subprocess.Popen(
        serve_command(*flags),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        preexec_fn=limit_files if nofile else None,
    )


def run_script(name: str, *args: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`python scripts/NAME ARGS` from the checkout's root, to its end; its output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
