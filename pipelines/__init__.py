import os
import signal
import sys
import threading


def after_main(handler):
    """The handler to restore when a command's main() has returned: SIG_IGN in place of this package's.

    The work is over then (published, or failed with its own line), but the process can take
    seconds to exit (Beam's and gRPC's threads, exit hooks, TensorFlow's teardown); a signal
    there used to end it silently with -2 / -15. Python keeps an ignored signal ignored through
    its own teardown, where a handler of its own would be reset to the default.
    """
    return signal.SIG_IGN if handler is _on_signal_outside_main else handler


def end_stopped_command(status: int, handler) -> None:
    """A `python -m` command stopped by a signal has printed its line and run its clean-ups: end the
    process now with `status`, skipping the interpreter's teardown (`handler` is the SIGINT handler
    from before the command, this package's only in such a process; anything else returns).

    That teardown, after a KeyboardInterrupt cut TensorFlow or gRPC short, printed their
    "Exception ignored" tracebacks or ended the process with -2 in place of 130 / 143.
    """
    if handler is _on_signal_outside_main:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)


def _on_signal_outside_main(signum, frame) -> None:
    """Ctrl-C or SIGTERM before the command's main() starts (while Beam, TensorFlow or pandas load).

    Nothing is open or written yet, so one line, exit 128 + signal. `pipelines.cli.entry_point`
    installs the handlers that unwind the work, and `after_main` says what follows it.
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
        signal.signal(_signum, _on_signal_outside_main)
