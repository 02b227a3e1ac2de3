"""The Assembler: the parts of this package wired together, once per function instance.

Each part has one job and gets what it needs here; the Assembler only delegates, so a test
or a benchmark can drive a whole pass (`run_pass`), one user's flush (`flush_user`) or one
sweep without the tick.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import clients
from ..config import Config
from ..contract import Chunk, now_us
from .collect import Collector
from .events import Events
from .flush import Flusher
from .leases import UserLeases
from .passes import Passes
from .recording import Rules
from .stats import PassStats
from .store import Store
from .sweeps import StateListing, Sweeps


class Assembler:
    def __init__(
        self,
        config: Config,
        *,
        storage_client=None,
        subscriber=None,
        publisher=None,
        clock: Callable[[], int] = now_us,
        hook: Callable[[str], None] | None = None,
        storage_retry=None,
    ):
        config.require("google_cloud_project", "recordings_bucket")
        self.config = config
        # `hook(step)` runs before every storage request: tests kill a pass there.
        self.store = Store(storage_client or clients.storage_client(), config.recordings_bucket, hook, storage_retry)
        self.subscriber = subscriber or clients.subscriber()
        self.publisher = publisher or clients.publisher()
        self.clock = clock
        rules = Rules(
            session_gap_us=config.session_gap_seconds * 1_000_000,
            max_recording_us=config.max_recording_seconds * 1_000_000,
            dedup_window_us=config.dedup_window_seconds * 1_000_000,
        )
        self.leases = UserLeases(self.store, clock, config.lease_seconds)
        self.flusher = Flusher(self.store, self.leases, Events(self.publisher, config), rules)
        self.sweeps = Sweeps(config, clock, self.store, self.leases, self.flusher, rules)
        self.collector = Collector(config, self.publisher)
        self.passes = Passes(config, clock, self.store, self.subscriber, self.collector, self.flush_user, self.sweeps)

    def run_pass(self, shard: int = 0) -> PassStats:
        """One pass of the shard (passes.py): what waits is flushed, acked and swept."""
        return self.passes.run(shard)

    def flush_user(self, uid: str, chunks: list[Chunk]) -> PassStats:
        """Append a batch to the user's recordings. Raises LeaseBusy / PreconditionFailed."""
        return self.leases.run(uid, self.flusher.flush, chunks)

    def finalize_idle(self, shard: int = 0, drained_us: int | None = None, states: StateListing | None = None) -> int:
        return self.sweeps.finalize_idle(shard, drained_us, states)

    def forget_erase_markers(self, shard: int = 0, states: StateListing | None = None) -> int:
        return self.sweeps.forget_erase_markers(shard, states)
