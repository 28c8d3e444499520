"""`--source bigquery` without Google credentials: one line naming `gcloud auth application-default login`,
exit 1, within seconds; no browser login (no listener, no ~/.apitools.token).

    .venv/bin/python -m pytest tests/test_bigquery_without_credentials.py -q
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from google.auth.exceptions import DefaultCredentialsError

from pipelines.local import bigquery_clients
from pipelines.preprocessing.bigquery import CREDENTIALS_HINT

ROOT = Path(__file__).resolve().parents[1]
# Interpreter and Beam start-up on a busy machine; without the check the run never ends.
LIMIT_S = 90


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def no_credentials_env(home) -> dict[str, str]:
    """The environment of a machine without Google credentials: an empty HOME, no key file, and a
    metadata server on a closed loopback port (so google-auth cannot wait for one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG") and not k.startswith("GCE_METADATA")
    }
    metadata = f"127.0.0.1:{closed_port()}"
    return {
        **env,
        "HOME": str(home),
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        "LOCAL_DATA_PATH": str(home / "data"),
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.e2e
def test_bigquery_without_credentials_stops_with_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    command = [
        sys.executable,
        "-m",
        "pipelines.preprocess",
        "--source",
        "bigquery",
        "--project",
        "my-project-123",
        "--output",
        str(tmp_path / "out"),
    ]
    with open(tmp_path / "stderr", "w") as stderr:
        process = psutil.Popen(
            command,
            cwd=ROOT,
            env=no_credentials_env(home),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    started, listened = time.monotonic(), []
    while process.poll() is None and time.monotonic() - started < LIMIT_S:
        try:
            listened += [c.laddr for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
        process.wait()
        pytest.fail(f"still running after {LIMIT_S} s: {(tmp_path / 'stderr').read_text()[-500:]}")
    assert process.returncode == 1
    assert (tmp_path / "stderr").read_text().splitlines() == [f"preprocess: error: {CREDENTIALS_HINT}"]
    assert listened == []
    assert not list(home.glob(".apitools.token*"))
    assert not (tmp_path / "out").exists()


def test_the_bounded_rest_client_refuses_to_start_a_browser_login(tmp_path, monkeypatch):
    """Even past the first check, the REST client Beam gets raises instead of apitools' interactive login."""
    for name, value in no_credentials_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    cache = bigquery_clients.beam_auth._Credentials
    monkeypatch.setattr(cache, "_credentials_init", False)
    monkeypatch.setattr(cache, "_credentials", None)
    with pytest.raises(DefaultCredentialsError, match="gcloud auth application-default login"):
        bigquery_clients._rest_client(5, None, PipelineOptions([]))
    assert not list(tmp_path.glob(".apitools.token*"))
