"""The Cloud Storage emulator (`gcp-storage-emulator`) for gs:// tests: start it with a bucket."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from emulators.processes import DEFAULT_HOST, READY_TIMEOUT_S, Emulator, free_port, launch
from emulators.python_env import ensure_venv


def storage_is_ready(host_port: str) -> bool:
    """True when the GCS emulator lists buckets."""
    try:
        with urllib.request.urlopen(f"http://{host_port}/storage/v1/b?project=local", timeout=5) as response:
            return response.status == 200 and "kind" in json.load(response)
    except (OSError, ValueError):
        return False


def start_storage(
    data_dir: Path,
    bucket: str,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    log=print,
) -> Emulator:
    """Start a GCS emulator (gcp-storage-emulator) holding `bucket`; point STORAGE_EMULATOR_HOST at it."""
    executable = ensure_venv(log=log).with_name("gcp-storage-emulator")
    port = port or free_port(host)
    data_dir = Path(data_dir)
    command = [
        str(executable),
        "--data-dir",
        str(data_dir / "gcs"),
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--default-bucket",
        bucket,
        "--quiet",
    ]
    return launch(command, f"{host}:{port}", storage_is_ready, data_dir, "storage_emulator", timeout)
