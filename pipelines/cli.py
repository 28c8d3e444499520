"""Shared command-line plumbing: one clear line and a meaningful exit code for every way a command ends.

    parser = OneLineErrorParser(prog="python -m pipelines.train", description=__doc__)
    raise UsageError("no file matches /tmp/x-*.csv")   # caught by `main`, printed, exit 2

    @entry_point("preprocess")        # Ctrl-C -> one line, 130; SIGTERM -> 143; a full disk -> one line, 1
    def main(argv=None) -> int: ...

Exit codes: 0 done, 1 the run failed (full disk included), 2 usage error, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextvars
import errno
import functools
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import pipelines

EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad flag, path or input: reported as one line, exit code 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message (see --help)` and exit 2."""
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def number_in(convert: Callable[[str], float], low: float, high: float, what: str, name: str):
    """argparse type: `convert(text)` from low to high, else `must be WHAT, got TEXT`.

    `name` is what argparse calls a value `convert` cannot read: `invalid NAME value: 'x'`.

    >>> number_in(float, 0, 1, "a fraction from 0 to 1", "fraction")("0.25")
    0.25
    """

    def parse(text: str):
        value = convert(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = name
    return parse


def report_usage_error(prog: str, error: Exception) -> int:
    """Print a usage error as one line; returns the exit code."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except when there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


# --- One wrapper for every entry point: signals, a full disk -----------------------------------------------

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BY_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
# Errors that mean "the disk (or the file-size limit) is full", not a bug: one line, exit 1.
DISK_FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (the file-size limit, `ulimit -f`)",
    errno.EDQUOT: "disk quota exceeded",
}
# Beam's workers send a failure back as text: "OSError: [Errno 28] No space left on device".
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")
# How long child processes (Beam's multi_processing workers) get to stop after SIGTERM before SIGKILL.
CHILD_GRACE_SECONDS = 2.0


@dataclass
class _Command:
    """What the running entry point told the wrapper: where it writes, what to say when interrupted."""

    prog: str
    output: str | None = None
    interrupt_hint: Callable[[], str | None] | None = None
    signum: int | None = None
    children_before: frozenset[int] = frozenset()


_CURRENT: contextvars.ContextVar[_Command | None] = contextvars.ContextVar("taxifare_command", default=None)


def writes_to(path: str) -> None:
    """Tell the wrapper where the running command writes (named when the disk fills up)."""
    command = _CURRENT.get()
    if command is not None:
        command.output = path


def on_interrupt(hint: Callable[[], str | None]) -> None:
    """What to add to the one line printed when the running command is interrupted (called then)."""
    command = _CURRENT.get()
    if command is not None:
        command.interrupt_hint = hint


def _child_processes() -> list:
    """This process's children and their children (psutil.Process objects); [] without psutil."""
    try:
        import psutil
    except ImportError:  # only the launcher needs it: Dataflow workers never run an entry point
        return []
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def stop_children(spared: frozenset[int] = frozenset()) -> int:
    """SIGTERM the processes this one started (Beam's multi_processing workers), SIGKILL those still
    there after CHILD_GRACE_SECONDS; waits for them to be gone. Returns how many were stopped."""
    children = [child for child in _child_processes() if child.pid not in spared]
    if not children:
        return 0
    import psutil

    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=CHILD_GRACE_SECONDS)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=CHILD_GRACE_SECONDS)
    return len(children)


def disk_full_error(error: BaseException, default_path: str | None = None) -> tuple[int, str | None] | None:
    """(errno, path) when `error`, or an exception it was raised from, is a full disk or the file-size limit.

    Beam re-raises a DoFn's OSError as another exception (its context keeps the original) or,
    from a worker process, only as text: both are searched.
    """
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current.errno, current.filename or default_path
        for match in _ERRNO_IN_TEXT.finditer(str(current)):
            if int(match.group(1)) in DISK_FULL:
                return int(match.group(1)), default_path
        pending += [current.__cause__, current.__context__]
    return None


def _interrupted_line(command: _Command, signum: int) -> str:
    """`prog: interrupted (SIGINT)[; hint]`."""
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    hint = None
    if command.interrupt_hint is not None:
        try:
            hint = command.interrupt_hint()
        except Exception:  # noqa: BLE001 - the hint only adds to the line; the exit must not fail on it
            hint = None
    return f"{command.prog}: {what} ({signal.Signals(signum).name})" + (f"; {hint}" if hint else "")


def _disk_full_line(command: _Command, found: tuple[int, str | None]) -> str:
    number, path = found
    where = f" writing {path}" if path else ""
    return (
        f"{command.prog}: error: {DISK_FULL[number]}{where} "
        f"([Errno {number}] {errno.errorcode[number]}); free some space or raise the limit, then re-run"
    )


def _one_line_exit(command: _Command, error: BaseException) -> int | None:
    """The exit code after printing one line for an interrupt or a full disk; None for anything else."""
    if command.signum is not None or isinstance(error, KeyboardInterrupt):
        signum = command.signum or signal.SIGINT
        print(_interrupted_line(command, signum), file=sys.stderr, flush=True)
        return EXIT_BY_SIGNAL[signum]
    found = disk_full_error(error, command.output)
    if found is not None:
        print(_disk_full_line(command, found), file=sys.stderr, flush=True)
        return EXIT_FAILED
    return None


def _quiet_thread_errors(args) -> None:
    """threading.excepthook once a command is interrupted: its threads' dying words are not shown."""


def _on_signal(command: _Command, signum: int, frame) -> None:
    """SIGINT and SIGTERM: stop the worker processes, then unwind as Ctrl-C does (clean-ups run, lock freed)."""
    if command.signum is not None:
        # A second signal while cleaning up: stop at once (the next run removes what this one left).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    command.signum = signum
    # Beam logs each failing bundle with its traceback, and its gRPC threads die with theirs when
    # the workers stop: once interrupted that is only noise, until the process ends.
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    threading.excepthook = _quiet_thread_errors
    stop_children(command.children_before)
    raise KeyboardInterrupt


def entry_point(prog: str):
    """Decorator for a command's `main(...) -> int`: the same ending for every command.

    - Ctrl-C (SIGINT): one line `prog: interrupted (SIGINT)[; hint]`, exit 130; SIGTERM: `terminated
      (SIGTERM)`, exit 143. Either one first stops the processes the command started (Beam's
      multi_processing workers), then unwinds like Ctrl-C, so every `finally` runs: the unfinished
      run folder is removed and the output lock released. A second signal kills at once.
    - A full disk or the file-size limit (ENOSPC, EFBIG, EDQUOT), wherever in the exception's
      chain: one line naming the path and the errno, exit 1.
    Anything else propagates unchanged. `writes_to(path)` and `on_interrupt(hint)` add to those lines.
    """

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            command = _Command(prog, children_before=frozenset(child.pid for child in _child_processes()))
            token = _CURRENT.set(command)
            handlers = {}
            if threading.current_thread() is threading.main_thread():  # signal handlers only go there
                for signum in EXIT_BY_SIGNAL:
                    handlers[signum] = signal.signal(signum, functools.partial(_on_signal, command))
            try:
                status = main(*args, **kwargs)
                if command.signum is not None:  # a signal the work swallowed still ends the command
                    raise KeyboardInterrupt
                return status
            except SystemExit:
                raise
            except BaseException as error:
                status = _one_line_exit(command, error)
                if status is None:
                    raise
                if status in EXIT_BY_SIGNAL.values():
                    pipelines.end_stopped_command(status, handlers.get(signal.SIGINT))
                return status
            finally:
                for signum, handler in handlers.items():
                    signal.signal(signum, pipelines.after_main(handler))
                _CURRENT.reset(token)

        return wrapper

    return decorate
