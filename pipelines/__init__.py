import os
import signal
import sys
import threading

# The status a `python -m pipelines.X` command's main() returned, once it has (pipelines.cli.entry_point).
_exit_status: int | None = None


def exiting_with(status: int) -> None:
    """The command's work is over: a signal from now on ends the process at once with `status`."""
    global _exit_status
    _exit_status = status


def _on_signal_outside_main(signum, frame) -> None:
    """Ctrl-C or SIGTERM before the command's main() starts (while Beam, TensorFlow or pandas load) or
    after it returned (Beam's and gRPC's threads and exit hooks can take seconds).

    Before: nothing is open or written yet, so one line, exit 128 + signal. After: the work is
    done (published or failed with its own line), so the process ends at once with main()'s status.
    `pipelines.cli.entry_point` installs the handlers that unwind the work in between.
    """
    if _exit_status is not None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(_exit_status)
    name = sys.orig_argv[2] if len(sys.orig_argv) > 2 else "pipelines"
    print(
        f"python -m {name}: stopped by {signal.Signals(signum).name} while starting; nothing was written",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


# `python -m pipelines.X` imports this package first (sys.argv[0] is still "-m" then): from here
# on a signal is one line, not a traceback or a silent -15. Imported any other way (tests, a
# program of its own), the process keeps its own handlers.
if sys.argv[:1] == ["-m"] and threading.current_thread() is threading.main_thread():
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, _on_signal_outside_main)
