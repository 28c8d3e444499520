"""The service follows the registry's production run: poll, load off the request path, swap whole.

`LiveModel` stands where the service's ServedModel stood (same `run`, `net`,
`info`, `path`), so request handlers keep reading `served.net`; each attribute
read returns the model of the moment. A background thread reads the
registry's production.json every `interval` seconds; when it names another run,
the thread loads and checks that run (the `load` callable: Keras, the numpy
pass, the feature contract) while requests go on with the old one, then swaps
one reference. A request never waits for a load and never sees half a model. A
failed load keeps the old model and logs one line (once per production change).

    live = LiveModel(served, load=lambda run: load_served_model(run, registry_dir), registry_dir=registry_dir)
    live.start()        # polls until the process exits; interval 0: never
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from taxifare_core import storage
from taxifare_core.training import registry

DEFAULT_RELOAD_SECONDS = 5.0


def _log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Loaded:
    """One served model and when it was loaded: swapped as one reference."""

    served: object
    loaded_at: str


class LiveModel:
    """The model being served, replaced whole when the production run changes (see the module docstring)."""

    def __init__(
        self,
        served,
        load: Callable[[str], object],
        registry_dir: str | None,
        interval: float = DEFAULT_RELOAD_SECONDS,
        follows_production: bool = True,
    ):
        self._current = _Loaded(served, _now())
        self._load = load
        self._registry = registry_dir
        self.interval = interval
        self.follows_production = follows_production
        self._failed: tuple | None = None  # the production state whose load failed (not retried until it changes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run(self) -> str:
        return self._current.served.run

    @property
    def path(self) -> str:
        return self._current.served.path

    @property
    def net(self):
        return self._current.served.net

    @property
    def info(self) -> dict:
        current = self._current
        follows = "production" if self.follows_production else "--run"
        return {**current.served.info, "loaded_at": current.loaded_at, "follows": follows}

    def check(self) -> bool:
        """One poll: load and swap in the production run when it changed; True when it swapped."""
        try:
            record = registry.read_production(self._registry)
        except (registry.NoModelError, storage.StorageError, OSError) as error:
            state = ("unreadable", str(error))
            if self._failed != state:
                self._failed = state
                _log(f"keeping run {self.run}: cannot read the production run: {error}")
            return False
        if record is None or record["run"] == self.run:
            return False
        state = (record["run"], record.get("since"))
        if self._failed == state:
            return False
        try:
            served = self._load(record["run"])
        except Exception as error:  # any failure keeps the old model: the service must go on
            self._failed = state
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            _log(f"keeping run {self.run}: cannot load production run {record['run']}: {text}")
            return False
        previous = self.run
        self._current = _Loaded(served, _now())
        self._failed = None
        _log(f"now serving run {served.run} (was {previous})")
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def start(self) -> LiveModel:
        """Poll in a daemon thread (nothing when not following production or the interval is 0)."""
        if self.follows_production and self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="production-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
