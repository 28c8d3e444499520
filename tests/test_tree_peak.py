"""scripts/jobs.py TreePeak: the peak and the samples of a real process tree's memory (a grandchild's included)."""

from __future__ import annotations

import sys

import psutil

from scripts.jobs import TreePeak

# A child that starts a grandchild holding 300 MB for 1.5 s, then waits 1 s holding nothing.
GRANDCHILD_HOLDS = (
    "import subprocess, sys, time; "
    "subprocess.run([sys.executable, '-c', "
    "'import time; block = bytearray(300 * 2**20); block[::4096] = b\"x\" * len(block[::4096]); time.sleep(1.5)']); "
    "time.sleep(1)"
)


def test_the_peak_counts_a_grandchilds_memory_and_the_samples_follow_time():
    process = psutil.Popen([sys.executable, "-c", GRANDCHILD_HOLDS])
    with TreePeak(process, interval=0.05) as peak:
        assert process.wait(timeout=60) == 0
    assert peak.rss > 300 * 2**20
    seconds = [t for t, _ in peak.samples]
    assert len(seconds) > 10 and seconds == sorted(seconds)
    assert max(rss for _, rss in peak.samples) == peak.rss
    # After the grandchild ended, the tree held far less: the samples show memory over time, not only its peak.
    assert peak.samples[-1][1] < 100 * 2**20


def test_a_process_that_already_ended_reads_as_zero():
    process = psutil.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    assert TreePeak(process, interval=0.05).tree_rss() == 0
