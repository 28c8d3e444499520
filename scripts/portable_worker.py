"""The worker side of scripts/portable_run.py: Beam's job service, its worker pool, and a worker boot.

It runs with the worker environment's Python, from a copy beside that environment, so
nothing of the project's checkout is on its path (only Beam and what the job ships):

    python portable_worker.py jobs --port_file F --staging_dir DIR --parent PID
    python portable_worker.py pool --port_file F --boot EXECUTABLE --parent PID
    python portable_worker.py boot --id ID --provision_endpoint H:P --control_endpoint H:P \\
        --logging_endpoint H:P --artifact_endpoint H:P --worker_root DIR --expect EXPECT.json

`jobs` is Beam's local job service (local_job_service.LocalJobServicer) on localhost; `pool`
is Beam's worker pool servicer (worker_pool_main) bound to 127.0.0.1 only (worker_pool_main
itself binds every interface). Both write their port to --port_file and stop when their
parent (portable_run.py) is gone, even if it was killed.

`boot` is what the pool starts for each worker, as a Dataflow worker's container boot does:
it asks the provision service for the job's pipeline options and staged files, fetches the
staged files, checks that the sdist and requirements file the job staged are the ones
this environment was built from (EXPECT.json), and then becomes
`python -m apache_beam.runners.worker.sdk_worker_main` with the options in
PIPELINE_OPTIONS, in a folder of its own (not the submitter's), without PYTHONPATH.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import sys
import tarfile
import time

PARENT_POLL_SECONDS = 0.5
# Staged names Beam's stager gives the --setup_file sdist and the --requirements_file.
SDIST_NAME = "workflow.tar.gz"
REQUIREMENTS_NAME = "requirements.txt"
RPC_SECONDS = 60


def sdist_digest(data: bytes) -> str:
    """sha256 of an sdist's member names and contents (not its timestamps): equal for two builds of one tree."""
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            # The top folder is taxifare-VERSION in any build: keep it, the version matters.
            digest.update(member.name.encode() + b"\0")
            digest.update(archive.extractfile(member).read() + b"\0")
    return digest.hexdigest()


def _write_port(path: str, port: int) -> None:
    """Write the port atomically (the launcher polls for the file)."""
    with open(path + ".tmp", "w") as handle:
        handle.write(str(port))
    os.replace(path + ".tmp", path)


def _wait_for_parent(parent: int) -> None:
    """Return when the launching process is gone (its child is re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds through `finally` (stopping servers and workers) instead of killing outright."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve_jobs(args) -> int:
    """Beam's local job service (localhost only) until the parent goes away."""
    import logging

    from apache_beam.runners.portability import local_job_service

    logging.basicConfig(level=logging.INFO, format="jobs %(levelname)s %(name)s: %(message)s")
    _exit_on_sigterm()
    servicer = local_job_service.LocalJobServicer(args.staging_dir)
    port = servicer.start_grpc_server(0)
    try:
        _write_port(args.port_file, port)
        _wait_for_parent(args.parent)
    finally:
        servicer.stop()
    return 0


def serve_pool(args) -> int:
    """Beam's worker pool servicer, bound to 127.0.0.1, starting workers with --boot."""
    import logging

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import (
        BeamFnExternalWorkerPoolServicer,
        kill_process_gracefully,
    )
    from apache_beam.utils import thread_pool_executor

    logging.basicConfig(level=logging.INFO, format="pool %(levelname)s %(name)s: %(message)s")
    _exit_on_sigterm()
    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    port = server.add_insecure_port("127.0.0.1:0")
    pool = BeamFnExternalWorkerPoolServicer(use_process=True, container_executable=args.boot)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    try:
        _write_port(args.port_file, port)
        _wait_for_parent(args.parent)
    finally:
        server.stop(0)
        # Workers the runner did not stop (a failed or interrupted job): Beam's pool keeps them here.
        for process in list(pool._worker_processes.values()):
            kill_process_gracefully(process, timeout=5)
    return 0


def _fetch_staged(channel, dependencies, folder: str, identity) -> dict[str, str]:
    """Fetch the job's staged files into `folder`: staged name -> path."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import (
        beam_artifact_api_pb2,
        beam_artifact_api_pb2_grpc,
        beam_runner_api_pb2,
    )

    service = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
    resolved = service.ResolveArtifacts(
        beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=dependencies), timeout=RPC_SECONDS, metadata=identity
    ).replacements
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for artifact in resolved:
        if artifact.role_urn != common_urns.artifact_roles.STAGING_TO.urn:
            continue
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
        path = os.path.join(folder, os.path.basename(name))
        with open(path, "wb") as handle:
            for chunk in service.GetArtifact(
                beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact), timeout=RPC_SECONDS, metadata=identity
            ):
                handle.write(chunk.data)
        paths[name] = path
    return paths


def check_staged(staged: dict[str, str], expect: dict) -> None:
    """SystemExit naming the difference unless the job staged the sdist and requirements this environment has."""
    if SDIST_NAME not in staged:
        raise SystemExit(f"boot: the job staged no {SDIST_NAME} (no --setup_file?): staged {sorted(staged)}")
    with open(staged[SDIST_NAME], "rb") as handle:
        digest = sdist_digest(handle.read())
    if digest != expect["sdist_digest"]:
        raise SystemExit(
            "boot: the job's sdist differs from the one this worker environment was built from "
            f"({digest[:12]} != {expect['sdist_digest'][:12]}): rebuild it"
        )
    requirements = None
    if REQUIREMENTS_NAME in staged:
        with open(staged[REQUIREMENTS_NAME], encoding="utf-8") as handle:
            requirements = handle.read()
    if requirements != expect.get("requirements"):
        raise SystemExit(
            "boot: the job's requirements file differs from the one this worker environment was built with"
        )


def boot(args) -> int:
    """Provision, fetch and check the staged files, then exec the SDK harness (as a container boot does)."""
    import grpc
    from apache_beam.portability.api import (
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
        endpoints_pb2,
    )
    from google.protobuf import json_format, text_format

    # The pool pipes our stdout and never reads it: send it to stderr so a full pipe never blocks us.
    os.dup2(2, 1)
    identity = (("worker_id", args.id),)  # the runner's services tell workers apart by this header
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(), timeout=RPC_SECONDS, metadata=identity)
            .info
        )
    folder = os.path.join(args.worker_root, args.id.replace("/", "_"))
    with grpc.insecure_channel(args.artifact_endpoint) as channel:
        staged = _fetch_staged(channel, info.dependencies, os.path.join(folder, "staged"), identity)
    with open(args.expect, encoding="utf-8") as handle:
        check_staged(staged, json.load(handle))

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        CONTROL_API_SERVICE_DESCRIPTOR=descriptor(args.control_endpoint),
        LOGGING_API_SERVICE_DESCRIPTOR=descriptor(args.logging_endpoint),
        SEMI_PERSISTENT_DIRECTORY=folder,
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
        WORKER_ID=args.id,
    )
    # A folder of the worker's own: a relative path in the job would land here, not beside the submitter.
    os.chdir(folder)
    os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], env)
    return 1  # not reached


def main(argv=None) -> int:
    """Dispatch to jobs, pool or boot."""
    parser = argparse.ArgumentParser(prog="portable_worker.py")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("jobs", "pool"):
        command = commands.add_parser(name)
        command.add_argument("--port_file", required=True)
        command.add_argument("--parent", type=int, required=True)
        if name == "jobs":
            command.add_argument("--staging_dir", required=True)
        else:
            command.add_argument("--boot", required=True)
    command = commands.add_parser("boot")
    for flag in (
        "--id",
        "--provision_endpoint",
        "--control_endpoint",
        "--logging_endpoint",
        "--artifact_endpoint",
        "--worker_root",
        "--expect",
    ):
        command.add_argument(flag, required=True)
    args, _ = parser.parse_known_args(argv)  # a newer pool may pass more endpoints
    return {"jobs": serve_jobs, "pool": serve_pool, "boot": boot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
