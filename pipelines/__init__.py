import os
import signal
import sys
import threading


def _stopped_while_starting(signum, frame) -> None:
    """Ctrl-C or SIGTERM while a command still imports Beam, TensorFlow or pandas: one line, 128 + signal.

    Nothing is open or written before the command's `main()` starts, so there is nothing to
    clean up; `pipelines.cli.entry_point` installs the handlers that unwind the work.
    """
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
        signal.signal(_signum, _stopped_while_starting)
