"""Shared command-line plumbing: a parser whose errors are one clear line and exit code 2.

    parser = OneLineErrorParser(prog="python -m pipelines.train", description=__doc__)
    raise UsageError("no file matches /tmp/x-*.csv")   # caught by `main`, printed, exit 2
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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
