"""Progress lines of the long local steps (preprocessing, training, batch prediction): done, rate, ETA.

    progress = Progress("preprocess", total=input_bytes, unit="B")
    progress.advance(len(block), rows=rows_in_block)    # prints at most every `every` seconds
    progress.finish()                                   # one last line

`progress_line` is the pure part (tested alone); `Progress` decides when to print
and where: on a terminal one line rewritten in place (carriage return), in a log
plain lines. `--quiet` on each entry point turns it off (`set_quiet`).
One Progress per process: Beam's in-process runners call the DoFns in this
process, so the preprocessing CLI configures the module's `current` reporter
and the parse step advances it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

# A line at least this often while work goes on (the brief's "at least every 10 s", with margin).
DEFAULT_EVERY_SECONDS = 5.0

_UNITS = {"B": ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")), "rows": ((10**6, "M"), (10**3, "k"))}


def human(amount: float, unit: str) -> str:
    """12_345_678 rows -> '12.3 M rows'; bytes in kB/MB/GB (binary)."""
    for size, label in _UNITS.get(unit, ()):
        if amount >= size:
            suffix = label if unit == "B" else f"{label} {unit}"
            return f"{amount / size:.1f} {suffix}"
    return f"{amount:,.0f} {unit}"


def duration(seconds: float) -> str:
    """75 -> '1m15s', 3700 -> '1h01m', 9 -> '9s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def rate_and_eta(done: float, total: float | None, seconds: float) -> tuple[float | None, float | None]:
    """(amount per second, seconds left at that rate); None where unknown (no time yet, no total)."""
    if seconds <= 0 or done <= 0:
        return None, None
    rate = done / seconds
    if not total or total <= 0:
        return rate, None
    return rate, max(total - done, 0) / rate


def progress_line(
    label: str, done: float, total: float | None, seconds: float, unit: str = "rows", rows: int | None = None
) -> str:
    """'preprocess: 1.2 GB of 4.0 GB (30%), 25.1 MB/s, 2.1 M rows (45,000 rows/s), ETA 1m52s'."""
    rate, eta = rate_and_eta(done, total, seconds)
    parts = [human(done, unit) + (f" of {human(total, unit)} ({min(done / total, 1):.0%})" if total else "")]
    if rate is not None:
        parts.append(f"{human(rate, unit)}/s")
    if rows is not None and unit != "rows":
        row_rate = f" ({rows / seconds:,.0f} rows/s)" if seconds > 0 else ""
        parts.append(f"{human(rows, 'rows')}{row_rate}")
    parts.append(f"ETA {duration(eta)}" if eta else f"{duration(seconds)} elapsed")
    return f"{label}: " + ", ".join(parts)


def rate_text(done: float, total: float | None, seconds: float, unit: str = "rows") -> str:
    """'95,000 rows/s, ETA 3m10s' (the rate and ETA part of a line another job already prints)."""
    rate, eta = rate_and_eta(done, total, seconds)
    if rate is None:
        return f"{duration(seconds)} elapsed"
    text = f"{rate:,.0f} {unit}/s" if unit == "rows" else f"{human(rate, unit)}/s"
    return text + (f", ETA {duration(eta)}" if eta is not None else "")


_quiet = False


def set_quiet(quiet: bool) -> None:
    """--quiet: no progress line from this process."""
    global _quiet
    _quiet = quiet


class Progress:
    """Counts work done and prints `progress_line` at most every `every` seconds (and at `finish`)."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "rows",
        every: float = DEFAULT_EVERY_SECONDS,
        stream: TextIO | None = None,
        clock=time.monotonic,
    ):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = self.last = clock()
        self.done, self.rows = 0, 0
        self._lock = threading.Lock()  # DoFns of one process may advance it from several threads
        self._terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._printed = False

    def line(self) -> str:
        """The progress line as of now."""
        rows = self.rows if self.unit != "rows" else None
        return progress_line(self.label, self.done, self.total, self.clock() - self.started, self.unit, rows)

    def advance(self, amount: float, rows: int = 0) -> None:
        """Add work done; print a line when `every` seconds passed since the last one."""
        with self._lock:
            self.done += amount
            self.rows += rows
            now = self.clock()
            if now - self.last < self.every:
                return
            self.last = now
            self._print(self.line())

    def finish(self) -> None:
        """The last line (a terminal's updating line ends with a newline)."""
        with self._lock:
            self._print(self.line(), final=True)

    def abandon(self) -> None:
        """The work failed: no last line (it would read as done), only the end of a terminal's updating line."""
        with self._lock:
            if self._terminal and self._printed and not _quiet:
                self.stream.write("\n")
                self.stream.flush()

    def _print(self, text: str, final: bool = False) -> None:
        if _quiet:
            return
        self._printed = True
        if self._terminal:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# The reporter the preprocessing parse step advances (set by the CLI for in-process runners; None: silent).
current: Progress | None = None


def runs_here(options) -> bool:
    """True when a Beam pipeline's DoFns run in this process (a local runner, not multi_processing):
    only then can they advance `current`."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from pipelines.runners import LOCAL_RUNNERS

    if options.view_as(StandardOptions).runner not in LOCAL_RUNNERS:
        return False
    return options.view_as(DirectOptions).direct_running_mode != "multi_processing"


def start(label: str, total: float | None = None, unit: str = "rows", **kwargs) -> Progress:
    """Make the process's `current` reporter and return it."""
    global current
    current = Progress(label, total, unit, **kwargs)
    return current


def stop(failed: bool = False) -> None:
    """Finish (or, for a failed run, abandon) and drop the process's `current` reporter."""
    global current
    if current is not None:
        if failed:
            current.abandon()
        else:
            current.finish()
    current = None
