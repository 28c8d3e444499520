"""pipelines.cli.entry_point: Ctrl-C, SIGTERM and a full disk end a command in one line with its exit code.

Real signals delivered to this process and real child processes; no stand-ins.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import cli


def test_keyboard_interrupt_is_one_line_and_130(capsys):
    cleaned = []

    @cli.entry_point("job")
    def main():
        try:
            raise KeyboardInterrupt
        finally:
            cleaned.append(True)

    assert main() == cli.EXIT_INTERRUPTED == 130
    assert cleaned == [True]
    assert capsys.readouterr().err == "job: interrupted (SIGINT)\n"


def test_sigint_wrapped_by_another_exception_still_means_interrupted(capsys):
    """Beam re-raises a DoFn's KeyboardInterrupt as RuntimeError('KeyboardInterrupt [while running ...]')."""

    @cli.entry_point("job")
    def main():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("KeyboardInterrupt [while running 'ParseCsv']") from None
        return 0

    assert main() == 130
    assert capsys.readouterr().err == "job: interrupted (SIGINT)\n"


def test_sigterm_unwinds_like_ctrl_c_and_exits_143(capsys):
    cleaned = []

    @cli.entry_point("job")
    def main():
        cli.on_interrupt(lambda: "OUT keeps its last published run")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert main() == cli.EXIT_TERMINATED == 143
    assert cleaned == [True]
    assert capsys.readouterr().err == "job: terminated (SIGTERM); OUT keeps its last published run\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the caller's again


def test_sigterm_stops_the_processes_the_command_started_but_no_other():
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = []

    @cli.entry_point("job")
    def main():
        # A child that ignores nothing and a grandchild behind a shell, as Beam's multi_processing workers.
        started.append(subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)'; :"]))
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    try:
        import psutil

        assert main() == 143
        worker = started[0]
        assert worker.poll() is not None  # stopped and reaped before the command returned
        assert not [
            p
            for p in psutil.Process().children(recursive=True)
            if p.pid != older.pid and p.status() != psutil.STATUS_ZOMBIE
        ]
        assert older.poll() is None  # running before the command: not its to stop
    finally:
        older.kill()
        older.wait()


def test_full_disk_is_one_line_naming_the_path_and_errno(capsys):
    @cli.entry_point("job")
    def main():
        cli.writes_to("/data/out")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:  # as Beam does: the same text, another type, the original as context
            raise RuntimeError(f"OSError: {error} [while running 'WriteTrain']") from None

    assert main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("job: error: no space left on device writing /data/out ([Errno 28] ENOSPC)")


@pytest.mark.parametrize(
    "error, found",
    [
        (OSError(errno.EFBIG, "File too large", "/x/train.csv"), (errno.EFBIG, "/x/train.csv")),
        (
            RuntimeError("Pipeline failed:\nTraceback ...\nOSError: [Errno 28] No space left on device\n"),
            (errno.ENOSPC, "/default"),
        ),
        (OSError(errno.EACCES, "Permission denied", "/x"), None),
        (RuntimeError("[Errno 2] No such file"), None),
    ],
)
def test_disk_full_error_searches_the_chain_and_the_text(error, found):
    assert cli.disk_full_error(error, "/default") == found


def test_disk_full_error_follows_cause_and_context():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/q/f")
        except OSError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert cli.disk_full_error(outer) == (errno.EDQUOT, "/q/f")


def test_other_errors_propagate_unchanged():
    @cli.entry_point("job")
    def main():
        raise ZeroDivisionError("a bug keeps its traceback")

    with pytest.raises(ZeroDivisionError):
        main()


def test_every_command_honours_help_and_does_nothing_else(tmp_path):
    """`--help` prints usage and exits 0 without touching a file (reset_local_files used to wipe everything)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "LOCAL_DATA_PATH": str(tmp_path / "data"),
        "LOCAL_REGISTRY_PATH": str(tmp_path / "registry"),
    }
    (tmp_path / "data" / "processed").mkdir(parents=True)
    (tmp_path / "data" / "processed" / "keep.csv").write_text("1\n")
    for module in ("main", "preprocess", "predict", "train", "serve", "report", "reset_local_files"):
        done = subprocess.run(
            [sys.executable, "-m", f"pipelines.{module}", "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.startswith("usage:"), (module, done.stdout, done.stderr)
        assert (tmp_path / "data" / "processed" / "keep.csv").exists(), module
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handler installed")
@pytest.mark.parametrize(
    ("module", "signum", "code"),
    [("preprocess", signal.SIGTERM, 143), ("train", signal.SIGINT, 130), ("predict", signal.SIGTERM, 143)],
)
def test_a_signal_while_the_command_still_imports_is_one_line(tmp_path, module, signum, code):
    """SIGTERM while Beam or TensorFlow still loads used to end the process silently (-15), and Ctrl-C
    with a KeyboardInterrupt traceback: the signal is sent as soon as the package's handler is there,
    seconds before the command's main() starts."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LOCAL_DATA_PATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"pipelines.{module}", "--help"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        # SIGTERM's bit: Python itself catches SIGINT from its first instant; the package sets both.
        while proc.poll() is None and not _catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(signum).name
    assert (proc.returncode, stderr.strip()) == (
        code,
        f"python -m pipelines.{module}: stopped by {name} while starting; nothing was written",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_signal_after_the_work_ended_leaves_the_commands_status(tmp_path):
    """A signal while the process exits (Beam's and gRPC's threads and exit hooks can take seconds) used to
    kill it silently (-15): the work is over, so the process exits as it would have, with main()'s
    status. An exit hook that sleeps stands for the slow exit."""
    (tmp_path / "sitecustomize.py").write_text(
        "import atexit, sys, time\n"
        "atexit.register(lambda: (print('exiting', file=sys.stderr, flush=True), time.sleep(3)))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}", "LOCAL_DATA_PATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.report", "--help"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr.readline().strip() == "exiting"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, stderr) == (0, "") and stdout.startswith("usage:")


def test_a_stopped_command_ends_without_the_interpreters_teardown(tmp_path):
    """After its one line and clean-ups, a command stopped by a signal ends at once: the teardown after a
    KeyboardInterrupt had cut TensorFlow short printed "Exception ignored" tracebacks or ended the
    process with -2. An exit hook stands for that teardown; the command waits on a terminal's answer."""
    import pty

    (tmp_path / "sitecustomize.py").write_text(
        "import atexit, sys\natexit.register(lambda: print('teardown ran', file=sys.stderr, flush=True))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}",
        "LOCAL_DATA_PATH": str(tmp_path / "data"),
        "LOCAL_REGISTRY_PATH": str(tmp_path / "registry"),
    }
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.csv").write_text("1\n")
    terminal, answer = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.reset_local_files"],
        cwd=tmp_path,
        env=env,
        stdin=answer,  # the pty's child side: the command sees a terminal and asks
        stdout=answer,
        stderr=answer,
    )
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            if select.select([terminal], [], [], 1)[0]:
                seen += os.read(terminal, 4096)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        while select.select([terminal], [], [], 1)[0]:
            seen += os.read(terminal, 4096)
    finally:
        os.close(terminal)
        os.close(answer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = seen.decode()
    assert proc.returncode == 143, text
    assert "python -m pipelines.reset_local_files: terminated (SIGTERM)" in text
    assert "teardown ran" not in text
    assert (tmp_path / "data" / "keep.csv").exists()
