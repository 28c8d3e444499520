"""The HTTP service's connections: a deadline for idle ones and a cap on how many are open.

uvicorn arms its keep-alive timeout only after a response, and any byte cancels it, so a
socket that connects and sends nothing (or one byte now and then) stays open for ever; a
thousand such sockets used up the server's file descriptors and every new client, `/health`
included, was refused. `GuardedHttp` (uvicorn's httptools protocol, given to
`uvicorn.Config(http=...)`) closes a connection that has not sent a whole request head
within `timeout_keep_alive` seconds of connecting or of its previous answer, and keeps at
most `limit_concurrency` connections: a new one at the cap closes the connection idle the
longest (a request that finds every connection busy gets uvicorn's 503).
`reserve_file_descriptors` makes sure the process may open that many sockets.

    config = uvicorn.Config(app, http=GuardedHttp, timeout_keep_alive=5, limit_concurrency=1000)
"""

from __future__ import annotations

import os
import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Descriptors the process needs beside its client sockets: the listening socket, logs,
# the event loop's own, thread-pool pipes, Python's open modules and files.
SPARE_FILE_DESCRIPTORS = 64


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and a cap on open connections."""

    _idle_timer = None
    _idle_since = 0.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._wait_for_request()
        if self._at_limit():
            self._close_longest_idle()

    def _at_limit(self) -> bool:
        """True when the open connections, this one included, reach uvicorn's limit (its 503 threshold)."""
        limit = self.config.limit_concurrency
        if limit is None or len(self.connections) < limit:
            return False
        # A closed transport may wait a while for its connection_lost (seen under uvloop): it is no
        # connection any more, and counted it would turn the next request away with a 503.
        for closed in [c for c in self.connections if c.transport.is_closing()]:
            self.connections.discard(closed)
        return len(self.connections) >= limit

    def connection_lost(self, exc) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._stop_waiting()  # a request is running: its body and answer have deadlines of their own
        self._at_limit()  # drops closed connections from the count uvicorn's 503 check reads
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer only when no pipelined request follows; wait for the next head then.
        if self.timeout_keep_alive_task is not None:
            self._wait_for_request()

    def _wait_for_request(self) -> None:
        self._stop_waiting()
        self._idle_since = self.loop.time()
        self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_expired)

    def _stop_waiting(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _close_longest_idle(self) -> None:
        """Make room for a new connection: close the one waiting for a request the longest (not this one)."""
        idle = [
            c for c in self.connections if c is not self and c._idle_timer is not None and not c.transport.is_closing()
        ]
        if idle:
            oldest = min(idle, key=lambda c: c._idle_since)
            oldest._stop_waiting()
            oldest.transport.close()
            self.connections.discard(oldest)


def open_file_descriptors() -> int:
    """How many descriptors this process has open now (an estimate where /proc is absent)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return SPARE_FILE_DESCRIPTORS


def reserve_file_descriptors(connections: int) -> int:
    """Raise the soft open-file limit so `connections` sockets fit; the limit now.

    OSError (one line) when the hard limit is too low.
    """
    needed = connections + open_file_descriptors() + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(
                f"--max_connections {connections:,} needs {needed:,} open files, but this process may "
                f"open {hard:,} (ulimit -Hn): lower --max_connections or raise the limit"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft
